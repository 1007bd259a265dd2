"""An evaluation on disk: a metrics JSON and a confusion-matrix PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_evaluation(evaluation, out_dir: Path, *, checkpoint: Path, checkpoint_hash: str,
                     title: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{evaluation.split}"
    metrics_path = out_dir / f"{stem}_metrics.json"
    payload = {
        "split": evaluation.split,
        "checkpoint": str(checkpoint),
        "checkpoint_hash": checkpoint_hash,
        "label_names": evaluation.label_names,
        **evaluation.metrics,
        "confusion_matrix": evaluation.confusion.tolist(),
    }
    metrics_path.write_text(json.dumps(payload, indent=2) + "\n")
    m = evaluation.metrics
    figure_path = plot_confusion(
        evaluation.confusion, evaluation.label_names, out_dir / f"{stem}_confusion.png",
        title=f"{title}\n{evaluation.split}: accuracy {m['accuracy']:.3f}, "
              f"weighted F1 {m['weighted_f1']:.3f} (n={m['num_samples']})")
    return metrics_path, figure_path


def metrics_lines(metrics: dict) -> list[str]:
    """The metrics as the jobs print them: accuracy, weighted and macro F1, per-class F1."""
    return [f"  accuracy     {metrics['accuracy']:.4f}",
            f"  weighted F1  {metrics['weighted_f1']:.4f}",
            f"  macro F1     {metrics['macro_f1']:.4f}",
            "  per-class F1 " + "  ".join(f"{name} {v['f1']:.3f} (n={v['support']})"
                                          for name, v in metrics["per_class"].items())]


def plot_confusion(confusion: np.ndarray, label_names: list[str], path: Path, *, title: str) -> Path:
    """The confusion matrix (rows: true class) as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.9 * len(label_names) + 1.5)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(np.asarray(confusion), display_labels=label_names).plot(
        ax=axes, cmap="Blues", colorbar=False, xticks_rotation=45)
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def plot_training_curves(history: list[dict], path: Path, *, title: str, best_epoch: int | None = None) -> Path:
    """Loss and weighted F1 per epoch, train against val, as a PNG at ``path`` (the best
    epoch marked): the picture beside the confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "loss", "loss"), (axes[1], "weighted_f1", "weighted F1")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ax.plot(epochs, [m[f"{split}_{metric}"] for m in history], style, markersize=3, label=split)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
