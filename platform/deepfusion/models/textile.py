"""TextilePollutionNet: ResNet trunk + spatial attention + GAP + two FC layers -> 3 logits."""

from __future__ import annotations

import torch
from torch import nn

from deepfusion.config.architectures import TextileNetConfig
from deepfusion.models.attention import SpatialAttention
from deepfusion.models.image_backbone import ResNetTrunk


class TextilePollutionNet(nn.Module):
    """The methodology's Algorithm 1: ``images [B, 3, H, W]`` in [0, 1] -> ``[B, num_classes]``."""

    def __init__(self, cfg: TextileNetConfig):
        super().__init__()
        self.config = cfg
        self.backbone = ResNetTrunk(cfg.backbone)
        self.spatial_attention = SpatialAttention(cfg.attention_kernel)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(self.backbone.out_channels, cfg.hidden_dim), nn.ReLU(inplace=True), nn.Dropout(cfg.dropout),
            nn.Linear(cfg.hidden_dim, cfg.num_classes),
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The pooled feature vector f (2048-d for ResNet-50)."""
        return self.pool(self.spatial_attention(self.backbone(images))).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.spatial_attention(self.backbone(images))))
