"""The logits fusion learns from (``fusion.fit_data``): the backbones' own train split, a
held-out part of the validation split, or cross-fitted (out-of-fold) train logits.

Each source yields two sets: ``fit``, the rows the fusion weights are fitted on, and
``select``, the rows that pick the best epoch of a fit and score a search trial. The test
split is never either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepfusion.config.fusion import FusionConfig
from deepfusion.fusion.logit_cache import SplitLogits


@dataclass(frozen=True)
class FitSplits:
    source: str
    fit: SplitLogits
    select: SplitLogits
    detail: dict  # what the report says about where the rows came from

    def describe(self) -> str:
        return (f"fusion fitted on {len(self.fit)} rows ({self.detail['fit']}), selected on "
                f"{len(self.select)} rows ({self.detail['select']})")


def subset(split: SplitLogits, index: np.ndarray) -> SplitLogits:
    index = np.sort(np.asarray(index, dtype=np.int64))
    return SplitLogits(sample_ids=[split.sample_ids[i] for i in index], labels=split.labels[index],
                       video=split.video[index], audio_text=split.audio_text[index],
                       masks={k: v[index] for k, v in split.masks.items()})


def concat(parts: list[SplitLogits]) -> SplitLogits:
    """Rows of several splits as one, sorted by sample id (as ``LogitCache.load`` sorts)."""
    ids = [i for p in parts for i in p.sample_ids]
    order = np.argsort(np.array(ids, dtype=object), kind="stable")
    return SplitLogits(
        sample_ids=[ids[i] for i in order], labels=np.concatenate([p.labels for p in parts])[order],
        video=np.concatenate([p.video for p in parts])[order],
        audio_text=np.concatenate([p.audio_text for p in parts])[order],
        masks={k: np.concatenate([p.masks[k] for p in parts])[order] for k in parts[0].masks})


def holdout(split: SplitLogits, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, select): ``share`` of each class held out for selection, seeded.
    A class with 2+ rows puts at least one row on each side."""
    rng = np.random.default_rng(seed)
    select = []
    for label in np.unique(split.labels):
        rows = np.flatnonzero(split.labels == label)
        rng.shuffle(rows)
        n = int(round(share * len(rows)))
        if len(rows) >= 2:
            n = min(max(n, 1), len(rows) - 1)
        select.extend(rows[:n])
    select = np.sort(np.array(select, dtype=np.int64))
    fit = np.setdiff1d(np.arange(len(split)), select)
    return fit, select


def fit_splits(cfg: FusionConfig, logits: dict[str, SplitLogits], *,
               out_of_fold: SplitLogits | None = None) -> FitSplits:
    """The fit and select rows of ``cfg.fit_data.source``. ``out_of_fold``: the train split's
    cross-fitted logits, which ``source: out_of_fold`` needs (they take backbone trainings:
    ``deepfusion.workflows.out_of_fold`` makes them)."""
    source = cfg.fit_data
    if source.source == "train":
        return FitSplits("train", logits["train"], logits["val"],
                         {"fit": "the backbones' own train split", "select": "the validation split"})
    if source.source == "validation":
        fit, select = holdout(logits["val"], source.holdout, source.seed)
        return FitSplits("validation", subset(logits["val"], fit), subset(logits["val"], select), {
            "fit": f"{1 - source.holdout:.0%} of the validation split",
            "select": f"the other {source.holdout:.0%} of it (stratified, seed {source.seed})"})
    if out_of_fold is None:
        raise ValueError("fusion.fit_data.source out_of_fold: no out-of-fold logits were given "
                         "(deepfusion.workflows.out_of_fold.run_fusion_stage makes them)")
    if sorted(out_of_fold.sample_ids) != sorted(logits["train"].sample_ids):
        raise ValueError("the out-of-fold logits do not cover the train split's rows exactly")
    return FitSplits("out_of_fold", out_of_fold, logits["val"], {
        "fit": f"out-of-fold train logits ({source.folds} folds of whole dialogues, seed {source.seed}; "
               f"each fold predicted by backbones trained without it)",
        "select": "the validation split"})
