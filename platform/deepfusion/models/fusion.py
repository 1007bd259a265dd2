"""Late fusion of the two frozen backbones' logits (methodology sections 3 and 4, Algorithm 1).

Both models see only logits: (N, 7) from MIMAMO Net ("video") and (N, 7) from the
Multimodal LSTM ("audio_text"). The two fusion weights are a softmax over two free
parameters, so ``w1 + w2 = 1`` holds by construction at every step of training and
both stay positive.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class LateFusion(nn.Module):
    """``w1 * video_logits + w2 * audio_text_logits``: 2 trainable parameters."""

    def __init__(self, video_weight: float = 0.5):
        super().__init__()
        if not 0 < video_weight < 1:
            raise ValueError(f"video_weight must lie in (0, 1), got {video_weight}")
        self.weight_logits = nn.Parameter(torch.tensor([math.log(video_weight), math.log(1 - video_weight)]))

    @classmethod
    def build(cls, num_classes: int, video_weight: float, dropout: float) -> LateFusion:
        return cls(video_weight)  # no per-class parameters, no dropout

    def fusion_weights(self) -> torch.Tensor:
        """[w1 (video), w2 (audio_text)], summing to 1."""
        return torch.softmax(self.weight_logits, dim=0)

    def forward(self, video_logits: torch.Tensor, audio_text_logits: torch.Tensor) -> torch.Tensor:
        w = self.fusion_weights()
        return w[0] * video_logits + w[1] * audio_text_logits


class EnhancedLateFusion(LateFusion):
    """``dropout(w1 * video_logits + w2 * audio_text_logits + b)``, b in R^num_classes.

    2 + 7 = 9 trainable parameters for MELD's 7 emotions.
    """

    def __init__(self, num_classes: int = 7, video_weight: float = 0.58, dropout: float = 0.3):
        super().__init__(video_weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def build(cls, num_classes: int, video_weight: float, dropout: float) -> EnhancedLateFusion:
        return cls(num_classes, video_weight, dropout)

    def forward(self, video_logits: torch.Tensor, audio_text_logits: torch.Tensor) -> torch.Tensor:
        return self.dropout(super().forward(video_logits, audio_text_logits) + self.bias)


def build_fusion(kind: str, num_classes: int, video_weight: float, dropout: float = 0.0) -> LateFusion:
    """A fusion head named in ``models.registry.FUSION_MODELS``."""
    import importlib

    from deepfusion.models.registry import FUSION_MODELS

    if kind not in FUSION_MODELS:
        raise ValueError(f"unknown fusion kind {kind!r}; expected one of {sorted(FUSION_MODELS)}")
    module, name = FUSION_MODELS[kind].split(":")
    return getattr(importlib.import_module(module), name).build(num_classes, video_weight, dropout)


@torch.inference_mode()
def explain(model: LateFusion, video_logits: torch.Tensor, audio_text_logits: torch.Tensor,
            label_names: list[str]) -> list[dict]:
    """Algorithm 1's output for each sample: emotion, confidence, the individual models'
    predictions and the fusion weights [w1 (video), w2 (audio_text)]."""
    was_training = model.training
    model.eval()
    probabilities = torch.softmax(model(video_logits, audio_text_logits).float(), dim=-1)
    model.train(was_training)
    weights = [round(float(w), 6) for w in model.fusion_weights()]
    confidence, predicted = probabilities.max(dim=-1)
    video = video_logits.argmax(dim=-1)
    audio_text = audio_text_logits.argmax(dim=-1)
    return [{
        "emotion": label_names[int(predicted[i])],
        "confidence": float(confidence[i]),
        "probabilities": {name: float(p) for name, p in zip(label_names, probabilities[i])},
        "individual_predictions": {"video": label_names[int(video[i])],
                                   "audio_text": label_names[int(audio_text[i])]},
        "fusion_weights": weights,
    } for i in range(len(predicted))]
