"""The ``train`` section: one backbone, its data, optimisation, scaling and run storage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from deepfusion.config.base import StrictModel
from deepfusion.config.models import ModelConfig


class OptimConfig(StrictModel):
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # plateau: ReduceLROnPlateau on validation loss; warmup_linear: linear warmup then decay
    scheduler: Literal["plateau", "warmup_linear", "none"] = "plateau"
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(3, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip_norm: float | None = Field(1.0, gt=0)
    # Class weights from the train split's counts (sklearn "balanced"), in the cross-entropy.
    class_weighting: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ScalingSection(StrictModel):
    """Ray Train workers. GPUs are used when the cluster has them, else CPU (a log note)."""

    num_workers: int = Field(2, ge=1)
    use_gpu: bool = True
    # Fractional GPUs: two workers at 0.5 share one card (the methodology's RTX 3060 12 GB).
    gpus_per_worker: float = Field(0.5, gt=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    # Collective backend: nccl for CUDA, gloo for CPU; auto picks by whether GPUs are used.
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    amp: bool = True  # mixed precision, only ever on CUDA


class RunSection(StrictModel):
    """Where Ray Train keeps results and checkpoints; the same name resumes the run."""

    storage_path: Path = Path("work/runs")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    max_failures: int = Field(2, ge=-1)
    checkpoints_to_keep: int = Field(2, ge=1)


class TrainConfig(StrictModel):
    model: ModelConfig
    # A dataset folder written by the preprocess job (<output_dir>/<name>, with manifest.json).
    data: Path
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(32, ge=1)
    # Early stopping and the best checkpoint follow this validation metric.
    monitor: Literal["val_weighted_f1", "val_accuracy", "val_loss"] = "val_weighted_f1"
    early_stopping_patience: int = Field(10, ge=1)
    optim: OptimConfig = OptimConfig()
    scaling: ScalingSection = ScalingSection()
    run: RunSection
    seed: int = 0
    # Test-set evaluation after training (metrics JSON + confusion-matrix PNG).
    evaluate_test: bool = True
    eval_batch_size: int = Field(32, ge=1)

