"""Classification metrics from a confusion matrix, so workers can sum matrices and agree.

``confusion[i, j]`` counts samples of true class i predicted as j (sklearn's convention).
Summing matrices across Ray Train workers gives exactly the metrics of the whole split.
"""

from __future__ import annotations

import numpy as np


def confusion_from_predictions(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    flat = np.asarray(labels, dtype=np.int64) * num_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(confusion: np.ndarray, class_names: list[str] | tuple[str, ...]) -> dict:
    """accuracy, weighted/macro F1 and per-class precision, recall, F1, support.

    Equal to sklearn's ``accuracy_score`` and ``f1_score(average=...)`` with
    ``zero_division=0`` (a test checks it): a class never predicted has precision 0.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    true_positive = np.diag(confusion)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros_like(true_positive), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    total = support.sum()
    return {
        "num_samples": int(total),
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "macro_f1": float(f1[support > 0].mean()) if (support > 0).any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
    }


def flat_metrics(prefix: str, metrics: dict, loss: float | None = None) -> dict[str, float]:
    """``{prefix}_accuracy``, ``{prefix}_weighted_f1``, ``{prefix}_f1_<class>``: what Ray reports."""
    flat = {f"{prefix}_accuracy": metrics["accuracy"], f"{prefix}_weighted_f1": metrics["weighted_f1"],
            f"{prefix}_macro_f1": metrics["macro_f1"]}
    if loss is not None:
        flat[f"{prefix}_loss"] = loss
    flat.update({f"{prefix}_f1_{name}": c["f1"] for name, c in metrics["per_class"].items()})
    return flat
