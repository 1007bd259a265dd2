"""Multi-class focal loss (Lin et al., 2017): -alpha * (1 - p_t)^gamma * log(p_t).

torchvision ships only the binary, sigmoid form (``sigmoid_focal_loss``); emotion
recognition needs the softmax form over 7 classes. With gamma = 0 and alpha = 1 it is
exactly cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0, gamma: float = 2.0,
               reduction: str = "mean") -> torch.Tensor:
    """``logits`` (N, C), integer ``targets`` (N,). ``alpha`` scales every class alike, as
    in the methodology (one scalar, searched in [0.5, 2.0])."""
    log_p_t = -F.cross_entropy(logits.float(), targets, reduction="none")
    if gamma == 0:  # d/dx x^0 is nan at x = 0 (p_t rounding to 1): skip the factor
        loss = -alpha * log_p_t
    else:
        # (1 - p_t)^gamma with p_t = exp(log p_t); expm1 keeps it exact for confident samples.
        loss = -alpha * (-torch.expm1(log_p_t)).pow(gamma) * log_p_t
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
