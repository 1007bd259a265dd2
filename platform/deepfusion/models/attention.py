"""Spatial attention: a per-location map in [0, 1] that reweights a feature map."""

from __future__ import annotations

import torch
from torch import nn


class SpatialAttention(nn.Module):
    """``attended = features * sigmoid(conv([mean_c(features), max_c(features)]))``.

    The spatial branch of CBAM (Woo et al., 2018): the methodology's "Conv Features ⊙
    Attention Map". Its softmax(QK^T)V formula describes a different (token) attention;
    the map form is the one its algorithms use, and it costs 2*k*k+1 parameters.
    """

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def attention_map(self, features: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([features.mean(dim=1, keepdim=True), features.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features * self.attention_map(features)
