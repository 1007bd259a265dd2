"""The fusion report: the seed's model comparison, the Optuna study, the learned weights.

``report.md`` with a table (MIMAMO Net, Multimodal LSTM, Late Fusion, Enhanced Late
Fusion; accuracy and weighted F1 on validation and test; fusion weights) and three PNGs:
``model_comparison.png``, ``optuna_history.png`` and ``optuna_importances.png``
(Optuna's own matplotlib plots, read back from the study's journal).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in Ray workers
import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class ModelRow:
    model: str
    val: dict  # classification_metrics() of the validation split
    test: dict | None  # of the test split, None when the dataset has none
    fusion_weights: list[float] | None = None  # [w1 video, w2 audio_text]

    def summary(self) -> dict:
        out = {"model": self.model, "val_accuracy": self.val["accuracy"], "val_weighted_f1": self.val["weighted_f1"]}
        if self.test is not None:
            out |= {"test_accuracy": self.test["accuracy"], "test_weighted_f1": self.test["weighted_f1"]}
        if self.fusion_weights is not None:
            out["fusion_weights"] = self.fusion_weights
        return out


def _cell(metrics: dict | None, key: str) -> str:
    return "-" if metrics is None else f"{100 * metrics[key]:.2f}"


def write_report(folder: Path, rows: list[ModelRow], *, search: dict, study_name: str, storage_url: str,
                 cache: dict, fit_data=None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"comparison": _plot_comparison(folder / "model_comparison.png", rows)}
    figures |= _plot_study(folder, study_name, storage_url)

    made_of = cache["freshness"]["inputs"]  # what the logit cache's key was made of
    video, audio_text = made_of["video_checkpoint"], made_of["audio_text_checkpoint"]
    lines = [
        "# Fusion report", "",
        f"Data: `{made_of['data']['path']}`, logit cache `{cache['key']}` (rows: {cache['rows']}).",
        f"Backbones: MIMAMO Net `{video['path']}` (sha256 {video['sha256'][:12]}), Multimodal LSTM "
        f"`{audio_text['path']}` (sha256 {audio_text['sha256'][:12]}).", "",
        *([f"Fusion: {fit_data.describe()}."
           + (" Its validation figures include the rows it was fitted on; the test split is untouched."
              if fit_data.source == "validation" else ""), ""] if fit_data is not None else []),
        "## Model comparison", "",
        "| model | val accuracy % | val weighted F1 % | test accuracy % | test weighted F1 % "
        "| fusion weights (video, audio-text) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        weights = "-" if row.fusion_weights is None else f"{row.fusion_weights[0]:.3f}, {row.fusion_weights[1]:.3f}"
        lines.append(f"| {row.model} | {_cell(row.val, 'accuracy')} | {_cell(row.val, 'weighted_f1')} | "
                     f"{_cell(row.test, 'accuracy')} | {_cell(row.test, 'weighted_f1')} | {weights} |")
    lines += ["", "![model comparison](model_comparison.png)", "",
              "## Enhanced Late Fusion search", "",
              f"{search['num_trials']} trials ({search['num_errored']} errored), objective: "
              f"{search['metric']} of each trial's best epoch. Optuna study `{study_name}` in `{storage_url}` "
              f"(`optuna-dashboard {storage_url}`); Tune results in `{search['experiment_dir']}` "
              f"(`tensorboard --logdir {search['experiment_dir']}`).", "",
              "Best configuration:", "", "```json", json.dumps(search["best_config"], indent=2), "```", ""]
    for key, title in (("history", "Optimization history"), ("importances", "Parameter importances")):
        if key in figures:
            lines += [f"![{title}]({figures[key].name})", ""]
        else:
            lines += [f"{title}: not available ({figures.get(key + '_error', 'too few trials')}).", ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    (folder / "comparison.json").write_text(json.dumps([r.summary() for r in rows], indent=2) + "\n")
    return path


def _plot_comparison(path: Path, rows: list[ModelRow]) -> Path:
    import numpy as np

    bars = [("val accuracy", lambda r: r.val["accuracy"]), ("val weighted F1", lambda r: r.val["weighted_f1"])]
    if all(r.test is not None for r in rows):
        bars += [("test accuracy", lambda r: r.test["accuracy"]), ("test weighted F1", lambda r: r.test["weighted_f1"])]
    figure, axis = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(bars)
    x = np.arange(len(rows))
    for i, (label, value) in enumerate(bars):
        heights = [100 * value(r) for r in rows]
        drawn = axis.bar(x + (i - (len(bars) - 1) / 2) * width, heights, width, label=label)
        axis.bar_label(drawn, fmt="%.1f", fontsize=7)
    axis.set_xticks(x, [r.model for r in rows])
    axis.set_ylabel("%")
    axis.set_ylim(0, 105)
    axis.set_title("Model comparison")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _plot_study(folder: Path, study_name: str, storage_url: str) -> dict:
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    from deepfusion.fusion.study import load_study

    study = load_study(study_name, storage_url)
    out = {}
    plots = (("history", "optuna_history.png", optuna_plots.plot_optimization_history),
             ("importances", "optuna_importances.png", optuna_plots.plot_param_importances))
    for key, name, plot in plots:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axis = plot(study)
        except (ValueError, RuntimeError) as err:  # e.g. importances need 2+ finished trials
            out[key + "_error"] = str(err)
            continue
        axis.figure.set_size_inches(8, 4.5)
        axis.figure.tight_layout()
        axis.figure.savefig(folder / name, dpi=120)
        plt.close(axis.figure)
        out[key] = folder / name
    return out
