"""Optimizer, learning-rate schedule and early stopping, as the config names them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from deepfusion.config.train import OptimConfig

# Submodules holding pretrained weights (BERT, Wav2Vec2, the ResNet trunks): optim.encoder_lr.
PRETRAINED_MODULES = ("text_encoder", "audio_encoder", "backbone", "frame_backbone")


def parameter_groups(cfg: OptimConfig, model: torch.nn.Module) -> list[dict]:
    """Trainable parameters (frozen encoders stay out), the pretrained encoders' in their
    own group at ``encoder_lr`` when it is set; the head's group comes first."""
    head, encoders = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            pretrained = cfg.encoder_lr is not None and name.split(".", 1)[0] in PRETRAINED_MODULES
            (encoders if pretrained else head).append(parameter)
    groups = [{"params": head, "lr": cfg.lr, "name": "head"}]
    if encoders:
        groups.append({"params": encoders, "lr": cfg.encoder_lr, "name": "encoder"})
    return groups


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(cfg, model)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Adam's weight_decay is the methodology's "L2 regularisation coefficient".
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(cfg: OptimConfig, optimizer, *, epochs: int, steps_per_epoch: int):
    """``(scheduler, steps_each_batch)``: per-batch for warmup, per-epoch for plateau."""
    if cfg.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience), False
    if cfg.scheduler == "warmup_linear":
        from transformers import get_linear_schedule_with_warmup

        total = max(1, epochs * steps_per_epoch)
        return get_linear_schedule_with_warmup(optimizer, math.ceil(cfg.warmup_ratio * total), total), True
    return None, False


@dataclass
class EarlyStopping:
    """Stops after ``patience`` epochs without a new best of the monitored metric."""

    patience: int
    mode: str  # "max" or "min"
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        improved = self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def monitor_mode(metric: str) -> str:
    return "min" if metric.endswith("loss") else "max"
