"""Training losses: multi-class focal loss (Lin et al., 2017), -alpha * (1 - p_t)^gamma *
log(p_t), and the backbone loss a train config names.

torchvision ships only the binary, sigmoid form (``sigmoid_focal_loss``); emotion
recognition needs the softmax form over 7 classes. With gamma = 0 and alpha = 1 it is
exactly cross-entropy.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from deepfusion.config.train import OptimConfig


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 1.0, gamma: float = 2.0,
               reduction: str = "mean", class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``logits`` (N, C), integer ``targets`` (N,). ``alpha`` scales every class alike, as
    in the methodology (one scalar, searched in [0.5, 2.0]); ``class_weights`` (C,) scale
    each sample by its class's weight, and "mean" is then the weighted mean, as in
    ``F.cross_entropy(weight=...)``, so that gamma = 0 is weighted cross-entropy."""
    log_p_t = -F.cross_entropy(logits.float(), targets, reduction="none")
    if gamma == 0:  # d/dx x^0 is nan at x = 0 (p_t rounding to 1): skip the factor
        loss = -alpha * log_p_t
    else:
        # (1 - p_t)^gamma with p_t = exp(log p_t); expm1 keeps it exact for confident samples.
        loss = -alpha * (-torch.expm1(log_p_t)).pow(gamma) * log_p_t
    if class_weights is not None:
        sample_weights = class_weights.to(loss.dtype)[targets]
        loss = loss * sample_weights
        if reduction == "mean":
            return loss.sum() / sample_weights.sum()
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def rdrop_loss(loss_fn: Callable, first: torch.Tensor, second: torch.Tensor, targets: torch.Tensor,
               alpha: float) -> torch.Tensor:
    """R-Drop (Liang et al., 2021) over two forward passes' logits of the same batch: the mean
    of their losses plus ``alpha`` / 4 * (KL(p1 || p2) + KL(p2 || p1)), batch-averaged. That is
    the paper's objective halved, so that the task loss keeps its scale."""
    log_p, log_q = F.log_softmax(first.float(), dim=-1), F.log_softmax(second.float(), dim=-1)
    symmetric_kl = (F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
                    + F.kl_div(log_p, log_q, reduction="batchmean", log_target=True))
    return 0.5 * (loss_fn(first.float(), targets) + loss_fn(second.float(), targets)) + alpha / 4 * symmetric_kl


def build_loss(cfg: OptimConfig, class_weights: list[float] | None, device: torch.device) -> Callable:
    """``loss(logits, targets)`` as ``cfg`` names it: cross-entropy (with label smoothing)
    or focal loss, class-weighted from the train split's counts when ``class_weighting``."""
    weights = torch.tensor(class_weights, device=device) if cfg.class_weighting and class_weights else None
    if cfg.loss == "focal":
        return functools.partial(focal_loss, gamma=cfg.focal_gamma, class_weights=weights)
    return nn.CrossEntropyLoss(weight=weights, label_smoothing=cfg.label_smoothing)
