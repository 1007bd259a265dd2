"""Speaker-grouped k-fold cross-validation of one backbone on a speech corpus.

A few hundred acted clips from a few dozen speakers make one speaker-disjoint test split
tiny (17 clips: one clip moves accuracy by 6 points). Cross-validation tests every
speaker exactly once: fold k is the dataset's ``folds.test = k`` view in its own shards
(``<name>_fold<k>``; the corpus is decoded once, by the Ray Data job, for fold 0, and the
other folds are written from those shards: ``preprocess.fold_views``), trained by the same Ray Train
run (``<run.name>_fold<k>``) and evaluated on its test speakers. The folds' confusion
matrices add up to one over every clip, from which the pooled figures come; the per-fold
spread and a majority baseline (each fold's most frequent train class) sit beside them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfusion import storage
from deepfusion.config import ConfigError, ExperimentConfig
from deepfusion.config.preprocess import PreprocessConfig, SpeechDataset
from deepfusion.evaluation.metrics import classification_metrics
from deepfusion.evaluation.report import plot_confusion

log = logging.getLogger("deepfusion.crossval")
CROSSVAL_JSON = "crossval.json"


@dataclass(frozen=True)
class CrossValidation:
    out_dir: Path  # <run.storage_path>/<run.name>_crossval
    metrics_path: Path
    confusion_path: Path
    summary: dict


def fold_dataset(experiment: ExperimentConfig, source: str = "<config>") -> tuple[PreprocessConfig, SpeechDataset]:
    """The preprocess section and the speech dataset with ``folds`` that ``train.data`` names."""
    preprocess, train = experiment.require("preprocess", source), experiment.require("train", source)
    remote = [key for key, where in (("preprocess.output_dir", preprocess.output_dir), ("train.data", train.data),
                                     ("train.run.storage_path", train.run.storage_path)) if storage.is_uri(where)]
    if remote:
        raise ConfigError(f"{source}: {', '.join(remote)}: cross-validation writes its fold datasets and runs in "
                          f"folders on this machine and cannot use a storage URI yet; use local folders")
    for dataset in preprocess.datasets:
        if Path(preprocess.output_dir) / dataset.name == Path(train.data):
            if not isinstance(dataset, SpeechDataset) or dataset.folds is None:
                raise ConfigError(f"{source}: preprocess.datasets {dataset.name!r}: cross-validation needs a "
                                  f"speech dataset with `folds: {{count: K}}`")
            return preprocess, dataset
    raise ConfigError(f"{source}: train.data {train.data} is none of preprocess.datasets "
                      f"({[str(Path(preprocess.output_dir) / d.name) for d in preprocess.datasets]})")


def crossval(experiment: ExperimentConfig, *, fresh: bool = False, source: str = "<config>") -> CrossValidation:
    """Preprocess, train and test every fold (Ray must be up); pool the test confusions."""
    from deepfusion.preprocess.datasets import preprocess
    from deepfusion.preprocess.fold_views import write_fold_view
    from deepfusion.training.trainer import train

    preprocess_cfg, dataset = fold_dataset(experiment, source)
    train_cfg = experiment.train
    folds, label_names, first = [], None, None
    for k in range(dataset.folds.count):
        started = time.perf_counter()
        view = dataset.model_copy(update={"name": f"{dataset.name}_fold{k}",
                                          "folds": dataset.folds.model_copy(update={"test": k})})
        if first is None:  # decoded once, by Ray Data; the other folds differ in three columns
            (first,) = preprocess(preprocess_cfg.model_copy(update={"datasets": [view]}))
            first_view, out_dir, manifest = view, first.out_dir, first.manifest
        else:
            out_dir = Path(preprocess_cfg.output_dir) / view.name
            manifest, _ = write_fold_view(first.out_dir, first_view, view, out_dir, preprocess_cfg.data.rows_per_shard)
        fold_cfg = train_cfg.model_copy(update={
            "data": out_dir, "evaluate_test": True,
            "run": train_cfg.run.model_copy(update={"name": f"{train_cfg.run.name}_fold{k}"})})
        outcome = train(fold_cfg, fresh=fresh, data_resources=preprocess_cfg.data, tracking=experiment.tracking,
                        tags={"deepfusion.crossval": train_cfg.run.name, "deepfusion.fold": str(k)})
        test = json.loads(Path(outcome.test_metrics_path).read_text())
        label_names = label_names or test["label_names"]
        if test["label_names"] != label_names:  # one preprocessing config: cannot differ, but never pool scrambled
            raise ConfigError(f"fold {k}: label map {test['label_names']} differs from fold 0's {label_names}")
        counts = manifest["counts"]
        folds.append({
            "fold": k, "run_dir": str(outcome.run_dir), "best_epoch": outcome.best_metrics["epoch"],
            "train_speakers": len(manifest["speakers"]),
            "clips": {split: sum(c.values()) for split, c in counts.items()},
            "accuracy": test["accuracy"], "weighted_f1": test["weighted_f1"], "macro_f1": test["macro_f1"],
            "confusion_matrix": test["confusion_matrix"],
            "majority_class": max(counts["train"], key=counts["train"].get),
            "wall_s": round(time.perf_counter() - started, 1),
        })
        log.info("fold %d/%d: test accuracy %.4f, weighted F1 %.4f (n=%d)", k + 1, dataset.folds.count,
                 test["accuracy"], test["weighted_f1"], test["num_samples"])
    return _write(experiment, dataset, folds, label_names)


def _write(experiment: ExperimentConfig, dataset: SpeechDataset, folds: list[dict],
           label_names: list[str]) -> CrossValidation:
    confusion = np.sum([np.asarray(f["confusion_matrix"]) for f in folds], axis=0)
    majority = np.zeros_like(confusion)
    for f in folds:  # each fold's test clips, all predicted as that fold's train majority
        majority[:, label_names.index(f["majority_class"])] += np.asarray(f["confusion_matrix"]).sum(axis=1)
    pooled, baseline = classification_metrics(confusion, label_names), classification_metrics(majority, label_names)
    summary = {
        "dataset": dataset.name, "folds": dataset.folds.count, "seed": experiment.train.seed,
        "label_names": label_names,
        "pooled": pooled, "confusion_matrix": confusion.tolist(),
        "per_fold_mean": {m: float(np.mean([f[m] for f in folds])) for m in ("accuracy", "weighted_f1")},
        "per_fold_std": {m: float(np.std([f[m] for f in folds])) for m in ("accuracy", "weighted_f1")},
        "baselines": {
            "chance_accuracy": 1 / len(label_names),
            "majority_accuracy": baseline["accuracy"], "majority_weighted_f1": baseline["weighted_f1"],
        },
        "wall_s": round(sum(f["wall_s"] for f in folds), 1),
        "folds_detail": folds,
        "train_config": experiment.train.model_dump(mode="json"),
    }
    out_dir = Path(experiment.train.run.storage_path) / f"{experiment.train.run.name}_crossval"
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = out_dir / CROSSVAL_JSON
    metrics_path.write_text(json.dumps(summary, indent=2) + "\n")
    confusion_path = plot_confusion(
        confusion, label_names, out_dir / "crossval_confusion.png",
        title=f"{experiment.train.run.name}: {dataset.folds.count}-fold speaker-grouped CV on {dataset.name}\n"
              f"pooled accuracy {pooled['accuracy']:.3f}, weighted F1 {pooled['weighted_f1']:.3f} "
              f"(n={pooled['num_samples']})")
    return CrossValidation(out_dir, metrics_path, confusion_path, summary)
