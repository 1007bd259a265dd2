"""The ``train`` section: one backbone, its data, optimisation, scaling and run storage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from deepfusion.config.architectures import ModelConfig
from deepfusion.config.augment import AugmentConfig
from deepfusion.config.base import StoragePath, StrictModel


class OptimConfig(StrictModel):
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    # Learning rate of the pretrained encoders (text_encoder, audio_encoder and the ResNet
    # trunks) when they train; None: lr for every parameter. Fine-tuning practice: a
    # pretrained BERT takes ~1e-5..5e-5 while the freshly initialised head takes ~1e-3.
    encoder_lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # plateau: ReduceLROnPlateau on validation loss; warmup_linear: linear warmup then decay
    scheduler: Literal["plateau", "warmup_linear", "none"] = "plateau"
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(3, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    grad_clip_norm: float | None = Field(1.0, gt=0)
    # cross_entropy, or focal (Lin et al., 2017: down-weights the easy, mostly majority-class
    # samples by (1 - p_t)^focal_gamma).
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0)
    # Class weights from the train split's counts (sklearn "balanced"), in either loss.
    class_weighting: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # cross_entropy only
    # R-Drop (Liang et al., NeurIPS 2021): each training batch goes through the model twice,
    # with different dropout, and the symmetric KL divergence between the two predictions is
    # added to the mean of their losses with this weight (the paper's alpha). 0: off. Doubles
    # the training compute; evaluation is unchanged.
    rdrop_alpha: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _smoothing_is_cross_entropy(self) -> OptimConfig:
        if self.loss == "focal" and self.label_smoothing:
            raise ValueError("label_smoothing applies to loss: cross_entropy only, not focal")
        return self


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
    # Intra-op threads per worker; None: Ray's default (the worker's whole CPUs, at least 1).
    torch_threads: int | None = Field(None, ge=1)


class RunSection(StrictModel):
    """Where Ray Train keeps results and checkpoints; the same name resumes the run."""

    storage_path: StoragePath = Field(Path("work/runs"), validate_default=True)  # or s3://bucket/runs
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    max_failures: int = Field(2, ge=-1)
    checkpoints_to_keep: int = Field(2, ge=1)


class TrainConfig(StrictModel):
    model: ModelConfig
    # A dataset folder written by the preprocess job (<output_dir>/<name>, with manifest.json).
    data: StoragePath
    epochs: int = Field(100, ge=1)
    # The global batch: each of the scaling.num_workers workers takes an equal part, so
    # results do not depend on how many workers share the work.
    batch_size: int = Field(32, ge=1)
    # Each worker's part goes through the model in this many micro-batches whose gradients
    # add up before one optimizer step: the same batch_size per step in 1/N of the memory
    # (BatchNorm then sees micro-batches).
    grad_accumulation: int = Field(1, ge=1)
    # Early stopping and the best checkpoint follow this validation metric.
    monitor: Literal["val_weighted_f1", "val_accuracy", "val_loss"] = "val_weighted_f1"
    early_stopping_patience: int = Field(10, ge=1)
    # Hold the decoded splits in Ray's object store instead of re-reading Parquet each
    # epoch; "auto" does when they take under a fifth of the store's free memory.
    cache_dataset: Literal["auto", "always", "never"] = "auto"
    # Train rows are shuffled within a buffer of this many rows, on top of a new block
    # order each epoch (no all-to-all shuffle per epoch).
    shuffle_buffer_rows: int = Field(1024, ge=0)
    # N > 0: each run of N batches' rows is sorted by text/audio length and cut into
    # batches of similar length (Hugging Face's group_by_length), shuffled: far less padding
    # for a trained text encoder. 0: batches as they come.
    group_by_length: int = Field(0, ge=0)
    # A frozen text encoder's token states are computed the first time a sample is met and
    # reused in every later epoch and in validation (``training.text_states``): the same
    # states, without re-encoding. false: encode every batch.
    cache_text_states: bool = True
    optim: OptimConfig = OptimConfig()
    # Training-time augmentation of image models (the methodology's Algorithm 1, "apply
    # augmentation if training"): the balancing transforms again, on the fly, drawn afresh
    # for every image each epoch from the epoch's seed; never on validation or test.
    # None: on for the textile classifier. true: the default transforms; false: off.
    augment: AugmentConfig | bool | None = None
    scaling: ScalingSection = ScalingSection()
    run: RunSection
    seed: int = 0
    # Test-set evaluation after training (metrics JSON + confusion-matrix PNG).
    evaluate_test: bool = True
    eval_batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        parts = self.scaling.num_workers * self.grad_accumulation
        if self.batch_size % parts:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by scaling.num_workers "
                             f"{self.scaling.num_workers} x grad_accumulation {self.grad_accumulation} (the batch "
                             f"is split evenly over the workers and their micro-batches)")
        return self

    @model_validator(mode="after")
    def _augment_is_for_images(self) -> TrainConfig:
        if self.augment not in (None, False) and self.model.kind != "textile":
            raise ValueError(f"augment applies to image models (textile); model.kind is {self.model.kind!r}")
        return self

    @property
    def training_augmentation(self) -> AugmentConfig | None:
        """The transforms training applies, None when it applies none."""
        if self.augment is None:
            return AugmentConfig() if self.model.kind == "textile" else None
        if isinstance(self.augment, bool):
            return AugmentConfig() if self.augment else None
        return self.augment

    @property
    def worker_batch_size(self) -> int:
        return self.batch_size // self.scaling.num_workers

    @property
    def micro_batch_size(self) -> int:
        """What one forward pass of one worker holds."""
        return self.worker_batch_size // self.grad_accumulation
