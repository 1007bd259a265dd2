"""An evaluation on disk: a metrics JSON and a confusion-matrix PNG."""

from __future__ import annotations

import json
from pathlib import Path


def write_evaluation(evaluation, out_dir: Path, *, checkpoint: Path, checkpoint_hash: str,
                     title: str) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{evaluation.split}"
    metrics_path, figure_path = out_dir / f"{stem}_metrics.json", out_dir / f"{stem}_confusion.png"
    payload = {
        "split": evaluation.split,
        "checkpoint": str(checkpoint),
        "checkpoint_hash": checkpoint_hash,
        "label_names": evaluation.label_names,
        **evaluation.metrics,
        "confusion_matrix": evaluation.confusion.tolist(),
    }
    metrics_path.write_text(json.dumps(payload, indent=2) + "\n")

    size = max(4.0, 0.9 * len(evaluation.label_names) + 1.5)
    figure, axes = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(evaluation.confusion, display_labels=evaluation.label_names).plot(
        ax=axes, cmap="Blues", colorbar=False, xticks_rotation=45)
    m = evaluation.metrics
    axes.set_title(f"{title}\n{evaluation.split}: accuracy {m['accuracy']:.3f}, "
                   f"weighted F1 {m['weighted_f1']:.3f} (n={m['num_samples']})", fontsize=10)
    figure.tight_layout()
    figure.savefig(figure_path, dpi=120)
    plt.close(figure)
    return metrics_path, figure_path
