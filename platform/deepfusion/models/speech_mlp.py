"""A small classifier on openSMILE functionals: one vector per clip -> 7 emotion logits."""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.config.architectures import SpeechMLPConfig
from deepfusion.config.preprocess import functionals_dim
from deepfusion.models.inputs import EmotionInputs
from deepfusion.models.standardize import FeatureStandardizer


class SpeechMLP(nn.Module):
    """Standardise (running statistics of the training clips), then ``hidden`` layers of
    Linear + GELU + dropout, then a linear classifier. A clip without audio gets a learned
    stand-in vector in place of its features."""

    def __init__(self, cfg: SpeechMLPConfig):
        super().__init__()
        self.config = cfg
        width = functionals_dim(cfg.features)
        self.standardize = FeatureStandardizer(width)
        self.missing_audio = nn.Parameter(torch.zeros(width))
        layers: list[nn.Module] = []
        for hidden in cfg.hidden:
            layers += [nn.Dropout(cfg.dropout), nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        self.layers = nn.Sequential(*layers, nn.Dropout(cfg.dropout), nn.Linear(width, cfg.num_classes))

    def forward(self, inputs: EmotionInputs) -> torch.Tensor:
        features = inputs.audio_functionals
        present = inputs.has_audio
        standardized = torch.zeros_like(features)
        if present.any():
            standardized[present] = self.standardize(features[present])
        if self.training and self.config.input_noise:
            standardized = standardized + self.config.input_noise * torch.randn_like(standardized)
        standardized = torch.where(present[:, None], standardized, self.missing_audio)
        return self.layers(standardized)
