"""Every model the platform builds, in one table: kind -> config, class, inputs, data, presets.

Adding a model is one row here (and its module): the builders, the shard columns it
reads, the datasets it can learn from and the presets it offers are all read from this
table, never dispatched on the kind string elsewhere.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from deepfusion.config.architectures import (
    OPENSMILE_KINDS,
    MimamoConfig,
    MultimodalLSTMConfig,
    SpeechMLPConfig,
    TextileNetConfig,
)


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    config: type  # the pydantic config of the model (``config.architectures``)
    builder: str  # "module:Class", imported when a model is built (torch loads then)
    task: str  # "textile" (classes of images) or "emotion" (a dataset's emotion classes)
    datasets: tuple[str, ...]  # dataset kinds (``manifest.json`` "kind") it learns from
    # Which modalities a config of this model reads: image, or text / video / audio.
    inputs: Callable[[object], dict[str, bool]]
    # What of the audio it reads: None (the waveform) or (openSMILE feature set,
    # "functionals" | "lld"), extracted in preprocessing.
    audio_features: Callable[[object], tuple[str, str] | None] = lambda cfg: None

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
              lambda cfg: {"text": cfg.use_text, "video": False, "audio": cfg.use_audio},
              lambda cfg: (cfg.audio_encoder.kind, "lld") if cfg.audio_encoder.kind in OPENSMILE_KINDS else None),
    ModelSpec("speech_mlp", SpeechMLPConfig, "deepfusion.models.speech_mlp:SpeechMLP", "emotion",
              ("speech", "manifest", "meld"),
              lambda cfg: {"text": False, "video": False, "audio": True},
              lambda cfg: (cfg.features, "functionals")),
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


RANDOM_INIT = "random-init"


def pretrained_components(cfg) -> dict[str, str]:
    """Where each pretrained part of a backbone config gets its weights: a torchvision
    weights name or file, a Hugging Face name, or ``random-init`` (built from its config
    with random weights: a from-scratch run, or the paper preset offline)."""
    parts: dict[str, str] = {}
    backbone = getattr(cfg, "backbone", None)
    if getattr(cfg, "frame_encoder", "resnet") == "fer_mini_xception":
        parts["face_encoder"] = f"fer_mini_xception: {cfg.face_weights or RANDOM_INIT}"
    elif backbone is not None:
        parts["image_backbone"] = f"{backbone.arch}: {backbone.weights}" if backbone.weights else \
            f"{backbone.arch}: {RANDOM_INIT}"
    text = getattr(cfg, "text_encoder", None)
    if text is not None and getattr(cfg, "use_text", True):
        parts["text_encoder"] = f"{text.name}: " + ("pretrained" if text.load_weights else RANDOM_INIT)
    audio = getattr(cfg, "audio_encoder", None)
    if audio is not None and getattr(cfg, "use_audio", True) and audio.kind == "wav2vec2":
        parts["audio_encoder"] = f"{audio.name}: " + ("pretrained" if audio.load_weights else RANDOM_INIT)
    return parts


def random_init_parts(cfg) -> list[str]:
    """The pretrained-by-design parts of ``cfg`` that were built with random weights."""
    return [name for name, source in pretrained_components(cfg).items() if source.endswith(RANDOM_INIT)]
