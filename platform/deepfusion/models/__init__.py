"""The backbones as plain ``torch.nn.Module``s; nothing here knows about Ray.

Importing this package is cheap; torch and transformers load when a model is built.
"""

from __future__ import annotations


def build_model(cfg):
    """The module for a model config (``deepfusion.config.ModelConfig``)."""
    if cfg.kind == "textile":
        from deepfusion.models.textile import TextilePollutionNet

        return TextilePollutionNet(cfg)
    if cfg.kind == "mimamo":
        from deepfusion.models.mimamo import MimamoNet

        return MimamoNet(cfg)
    if cfg.kind == "multimodal_lstm":
        from deepfusion.models.multimodal_lstm import MultimodalLSTM

        return MultimodalLSTM(cfg)
    raise ValueError(f"unknown model kind {cfg.kind!r}")


def model_inputs(cfg) -> dict[str, bool]:
    """Which modalities an emotion model reads (keyword arguments of ``emotion_inputs``)."""
    if cfg.kind == "mimamo":
        return {"text": cfg.use_text, "video": True, "audio": False}
    if cfg.kind == "multimodal_lstm":
        return {"text": cfg.use_text, "video": False, "audio": cfg.use_audio}
    raise ValueError(f"{cfg.kind!r} is not an emotion model")
