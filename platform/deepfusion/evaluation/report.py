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
