"""An ensemble of models that predicted the same samples: their probabilities averaged,
optionally corrected for the training prior.

    jobs.predict / jobs.evaluate (one ``--out`` per model) -> ``jobs.ensemble`` -> the
    ensemble's predictions, and with labels its metrics

Seed ensembles are the cheapest reliable gain for a fine-tuned encoder: models that differ
only in their seed disagree on the hard samples, and the mean of their probabilities is
better calibrated than any one of them. The members must have predicted the same input
with the same classes; a member's missing sample is an error, not a silent gap.

Logit adjustment (Menon et al., ICLR 2021) divides each class's probability by its
training frequency to the power ``tau`` before the arg-max: a model trained on MELD,
where neutral is 47 % of the utterances and fear 2.7 %, then answers the rare classes
more often. ``tau = 1`` is the correction that targets balanced accuracy; 0 is none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepfusion.config import ConfigError
from deepfusion.evaluation.predict import Evaluation
from deepfusion.evaluation.report import write_evaluation
from deepfusion.hashing import sha256_json
from deepfusion.workflows.predict import STATE, labeled_evaluation, read_predictions


@dataclass
class Ensemble:
    out_dir: Path
    members: list[dict]  # per member: folder, checkpoint, and its own metrics when labeled
    table: pd.DataFrame
    evaluation: Evaluation | None
    metrics_path: Path | None = None
    confusion_path: Path | None = None


def ensemble(prediction_dirs: list[Path], out_dir: Path, logit_adjustment: float = 0.0) -> Ensemble:
    """Average the class probabilities of ``prediction_dirs`` (each a ``jobs.predict`` /
    ``jobs.evaluate`` output folder over the same data) into ``out_dir``; with
    ``logit_adjustment`` tau > 0, divide them by the training prior to the power tau (one
    folder is then allowed: the adjusted model alone)."""
    if len(prediction_dirs) < (1 if logit_adjustment else 2):
        raise ConfigError(f"--predictions: an ensemble needs at least 2 prediction folders, got {len(prediction_dirs)}")
    members, tables = [], []
    for folder in map(Path, prediction_dirs):
        state_file = folder / STATE
        if not state_file.is_file():
            raise ConfigError(f"--predictions: {folder} holds no predictions ({STATE} missing); "
                              f"run jobs.predict or jobs.evaluate with --out {folder}")
        state = json.loads(state_file.read_text())
        members.append({"folder": str(folder), "checkpoint": state.get("checkpoint_path"), "data": state.get("data")})
        tables.append(read_predictions(folder))
    _check_alike(members, tables)
    first = tables[0]
    classes = [c[len("prob_"):] for c in first.columns if c.startswith("prob_")]
    probabilities = np.mean([t[[f"prob_{c}" for c in classes]].to_numpy(dtype=np.float64) for t in tables], axis=0)
    prior = None
    if logit_adjustment:
        prior = training_prior(members[0]["checkpoint"], classes)
        probabilities = probabilities / prior ** logit_adjustment
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    table = pd.DataFrame({"sample_id": first["sample_id"],
                          "prediction": [classes[i] for i in probabilities.argmax(axis=1)],
                          "confidence": probabilities.max(axis=1)})
    for i, name in enumerate(classes):
        table[f"prob_{name}"] = probabilities[:, i]
    if "true_label" in first:
        table["true_label"] = first["true_label"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "predictions.csv", index=False)
    data = Path(members[0]["data"] or "data")
    evaluation = labeled_evaluation(table, classes, data)
    result = Ensemble(out_dir, members, table, evaluation)
    if evaluation is not None:
        for member, member_table in zip(members, tables):
            own = labeled_evaluation(member_table, classes, data)
            member["metrics"] = {k: own.metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")}
        result.metrics_path, result.confusion_path = write_evaluation(
            evaluation, out_dir, checkpoint=out_dir, checkpoint_hash=sha256_json([m["checkpoint"] for m in members]),
            title=f"ensemble of {len(members)} on {data.name}")
    record = {"members": members, "logit_adjustment": logit_adjustment,
              "training_prior": None if prior is None else dict(zip(classes, prior.round(6).tolist()))}
    (out_dir / "ensemble.json").write_text(json.dumps(record, indent=2) + "\n")
    return result


def training_prior(checkpoint: str | None, classes: list[str]) -> np.ndarray:
    """The class frequencies of a checkpoint's training split, from its data manifest,
    add-one smoothed (a class absent from training gets a small prior, not a zero)."""
    from deepfusion.artifacts.checkpoint import read_card
    from deepfusion.artifacts.dataset import ShardDataset

    if checkpoint is None:
        raise ConfigError("--logit-adjustment: the predictions do not name their checkpoint")
    info = read_card(Path(checkpoint)).data_info
    counts = ShardDataset.open(Path(info["path"]), "--logit-adjustment").manifest["counts"]["train"]
    frequency = np.array([counts.get(c, 0) for c in classes], dtype=np.float64) + 1.0
    return frequency / frequency.sum()


def _check_alike(members: list[dict], tables: list[pd.DataFrame]) -> None:
    first, reference = members[0], tables[0]
    classes = [c for c in reference.columns if c.startswith("prob_")]
    for member, table in zip(members[1:], tables[1:]):
        if member["data"] != first["data"]:
            raise ConfigError(f"--predictions: {member['folder']} predicted {member['data']}, "
                              f"{first['folder']} predicted {first['data']}: not the same input")
        theirs = [c for c in table.columns if c.startswith("prob_")]
        if theirs != classes:
            raise ConfigError(f"--predictions: {member['folder']} has other classes (or another order) than "
                              f"{first['folder']}: {[c[5:] for c in theirs]} and {[c[5:] for c in classes]}")
        if not table["sample_id"].equals(reference["sample_id"]):
            missing = sorted(set(reference["sample_id"]) ^ set(table["sample_id"]))
            raise ConfigError(f"--predictions: {member['folder']} and {first['folder']} hold different samples "
                              f"({len(missing)} differ, e.g. {missing[:3]}); finish both runs on the same input")
