"""Feature standardisation with the training data's statistics, learned as it trains."""

from __future__ import annotations

import torch
from torch import nn


class FeatureStandardizer(nn.BatchNorm1d):
    """``(x - mean) / std`` per feature, ``x`` of shape ``[N, D]``: a BatchNorm without
    affine parameters whose running statistics are the cumulative average over every
    training batch (``momentum=None``), i.e. the training data's own mean and variance.
    Training normalises with the batch's statistics, evaluation and serving with the
    running ones; a training batch of one row uses the running ones too."""

    def __init__(self, dim: int):
        super().__init__(dim, affine=False, momentum=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)
