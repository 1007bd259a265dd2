"""Every model the platform builds, in one table: kind -> config, class, inputs, data, presets.

Adding a model is one row here (and its module): the builders, the shard columns it
reads, the datasets it can learn from and the presets it offers are all read from this
table, never dispatched on the kind string elsewhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from deepfusion.config.architectures import MimamoConfig, MultimodalLSTMConfig, TextileNetConfig


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    config: type  # the pydantic config of the model (``config.architectures``)
    builder: str  # "module:Class", imported when a model is built (torch loads then)
    task: str  # "textile" (3 classes of images) or "emotion" (MELD's 7 emotions)
    datasets: tuple[str, ...]  # dataset kinds (``manifest.json`` "kind") it learns from
    # Which modalities a config of this model reads: image, or text / video / audio.
    inputs: Callable[[object], dict[str, bool]]

    @property
    def presets(self) -> tuple[str, ...]:
        return self.config.model_fields["preset"].annotation.__args__

    def build(self, cfg):
        module, name = self.builder.split(":")
        return getattr(importlib.import_module(module), name)(cfg)


MODELS: dict[str, ModelSpec] = {spec.kind: spec for spec in (
    ModelSpec("textile", TextileNetConfig, "deepfusion.models.textile:TextilePollutionNet", "textile",
              ("image_folder",), lambda cfg: {"image": True}),
    ModelSpec("mimamo", MimamoConfig, "deepfusion.models.mimamo:MimamoNet", "emotion",
              ("meld", "manifest"), lambda cfg: {"text": cfg.use_text, "video": True, "audio": False}),
    ModelSpec("multimodal_lstm", MultimodalLSTMConfig, "deepfusion.models.multimodal_lstm:MultimodalLSTM", "emotion",
              ("meld", "speech", "manifest"),
              lambda cfg: {"text": cfg.use_text, "video": False, "audio": cfg.use_audio}),
)}

# The fusion heads over the two emotion backbones' logits (``models.fusion``).
FUSION_MODELS: dict[str, str] = {
    "late_fusion": "deepfusion.models.fusion:LateFusion",
    "enhanced_late_fusion": "deepfusion.models.fusion:EnhancedLateFusion",
}


def model_spec(kind: str) -> ModelSpec:
    try:
        return MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODELS)}") from None
