"""The models as plain ``torch.nn.Module``s: nothing here knows about Ray or storage.

``registry.MODELS`` lists every backbone (its config, class, inputs, datasets and
presets); ``fusion`` holds the late-fusion heads; ``losses`` the training losses both
use. Importing this package is cheap; torch and transformers load when a model is built.
"""

from __future__ import annotations

from deepfusion.models.registry import MODELS, ModelSpec, model_spec

__all__ = ["MODELS", "ModelSpec", "audio_features", "build_model", "model_inputs", "model_reads", "model_spec"]


def build_model(cfg):
    """The module for a model config (``deepfusion.config.ModelConfig``)."""
    return model_spec(cfg.kind).build(cfg)


def model_inputs(cfg) -> dict[str, bool]:
    """Which modalities a model reads: ``{"image": True}`` or text / video / audio flags."""
    return model_spec(cfg.kind).inputs(cfg)


def model_reads(cfg) -> list[str]:
    """The modalities a model reads, in the order image, video, audio, text."""
    wants = model_inputs(cfg)
    return [m for m in ("image", "video", "audio", "text") if wants.get(m)]


def audio_features(cfg) -> tuple[str, str] | None:
    """The openSMILE features a model reads instead of the waveform: (feature set,
    ``"functionals"`` or ``"lld"``), or None."""
    return model_spec(cfg.kind).audio_features(cfg)
