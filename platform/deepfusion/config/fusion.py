"""The ``fusion`` section: logit cache, fusion training and the Ray Tune + Optuna search.

Defaults are the methodology's Table 3: AdamW, weight decay 1e-4, dropout 0.3, gradient
accumulation over 4 batches, up to 100 epochs with early stopping, focal loss; searched
are the learning rate, batch size, MIMAMO weight and the focal alpha and gamma.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from deepfusion.config.base import StoragePath, StrictModel
from deepfusion.config.resources import DataResources


class FusionTraining(StrictModel):
    """How one fusion model is fitted on cached logits (a trial, or the basic late fusion)."""

    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    video_weight: float = Field(0.58, gt=0, lt=1)  # the initial w1 (w2 = 1 - w1)
    focal_alpha: float = Field(1.0, gt=0)
    focal_gamma: float = Field(2.0, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    grad_accumulation: int = Field(4, ge=1)
    max_epochs: int = Field(100, ge=1)
    # Stop after this many epochs without a better validation weighted F1.
    patience: int = Field(5, ge=1)
    # Mixed precision applies only on CUDA; fusion trials run on CPU unless given a GPU.
    amp: bool = True


class SearchSpace(StrictModel):
    """Table 3's ranges. Each range is [low, high]."""

    lr: tuple[float, float] = (1e-5, 1e-3)  # log-uniform
    batch_size: tuple[int, ...] = (4, 6, 8)  # categorical
    video_weight: tuple[float, float] = (0.3, 0.8)  # uniform
    focal_alpha: tuple[float, float] = (0.5, 2.0)  # uniform
    focal_gamma: tuple[float, float] = (1.0, 3.0)  # uniform

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SearchSpace:
        for name in ("lr", "video_weight", "focal_alpha", "focal_gamma"):
            low, high = getattr(self, name)
            if not low < high:
                raise ValueError(f"{name}: the range [{low}, {high}] is empty")
        if self.lr[0] <= 0:
            raise ValueError(f"lr: a log-uniform range needs low > 0, got {self.lr[0]}")
        if not (self.video_weight[0] > 0 and self.video_weight[1] < 1):
            raise ValueError(f"video_weight: {self.video_weight} must lie inside (0, 1)")
        return self


class SearchSection(StrictModel):
    """The Ray Tune sweep. Trials are tiny, so the defaults pack two per core."""

    num_samples: int = Field(64, ge=1)
    metric: Literal["val_weighted_f1", "val_accuracy"] = "val_weighted_f1"
    space: SearchSpace = SearchSpace()
    max_concurrent_trials: int = Field(4, ge=1)
    cpus_per_trial: float = Field(0.5, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    # Keep trial actors (torch imported, logits loaded) alive for the next trial;
    # false is Tune's default: a fresh worker process per trial.
    reuse_actors: bool = True
    seed: int = 0
    # A trial whose actor dies (its node lost, an out-of-memory kill) is started again this
    # many times; finished trials are never rerun. 0: it ends as an errored trial.
    max_failures: int = Field(2, ge=0)
    storage_path: StoragePath = Field(Path("work/tune"), validate_default=True)  # or s3://bucket/tune
    name: str = Field("fusion", pattern=r"^[A-Za-z0-9_.-]+$")
    # Tune's console output: 0 silent, 1 its status table every few seconds, 2-3 every result.
    verbose: int = Field(1, ge=0, le=3)


class FitData(StrictModel):
    """Which logits the fusion models learn from. The backbones are overconfident on their
    own training split, so fusion fitted there learns to trust whichever backbone fits its
    training data best, not the one that generalises (docs/results.md, "Fusion on honest logits").

    - ``train``: the backbones' logits on their own train split; early stopping and the
      search objective on the validation split.
    - ``validation``: the validation split, which neither backbone trained on, cut in two
      (stratified, seeded): fusion fits on ``1 - holdout`` of it and early-stops and is
      scored on the rest.
    - ``out_of_fold``: cross-fitted train logits: the train split in ``folds`` folds (whole
      dialogues, stratified); for each fold both backbones are trained again, with their own
      train configs, on the other folds, and predict it. Fusion fits on these and
      early-stops on the validation split. Costs ``folds`` extra trainings of each backbone
      (kept and reused while the checkpoints and data are unchanged).
    """

    source: Literal["train", "validation", "out_of_fold"] = "train"
    holdout: float = Field(0.4, gt=0, lt=1)  # validation: the share kept for selection
    folds: int = Field(3, ge=2, le=10)  # out_of_fold
    seed: int = 0  # the validation cut / the fold assignment


class FusionConfig(StrictModel):
    # The dataset both backbones were trained on (manifest.json + split=*): MELD, a manifest
    # or any emotion layout whose rows carry what the two backbones read.
    data: StoragePath
    video_checkpoint: StoragePath  # a MIMAMO Net checkpoint folder, e.g. work/runs/mimamo/best
    audio_text_checkpoint: StoragePath  # a Multimodal LSTM checkpoint folder
    cache_dir: StoragePath = Field(Path("work/logit_cache"), validate_default=True)
    inference: DataResources = DataResources(batch_size=32)
    # Every fit (late fusion, each trial, the exported best) starts from this; the search
    # overrides the searched fields.
    training: FusionTraining = FusionTraining()
    # The basic late fusion: two weights, cross-entropy, no search.
    late_fusion: FusionTraining = FusionTraining(lr=1e-2, batch_size=32, focal_gamma=0.0, dropout=0.0,
                                                 grad_accumulation=1, weight_decay=0.0, video_weight=0.5)
    search: SearchSection = SearchSection()
    fit_data: FitData = FitData()
    # Where the best fusion checkpoint is exported for serving.
    export_dir: StoragePath = Field(Path("work/fusion/best"), validate_default=True)
