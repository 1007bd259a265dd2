"""Which logits should fusion learn from? Late Fusion and Enhanced Late Fusion fitted on each
``fusion.fit_data.source`` over several seeds, against the best single backbone, on the test
split (``python -m jobs.compare_fusion``).

A seed sets the search (Optuna's sampler and every fit's initialisation and batch order),
the validation cut of ``validation`` and, unless ``fold_seed`` is given, the folds of
``out_of_fold`` (each seed then trains its own 2 x folds fold backbones; with ``fold_seed``
every seed reuses one set of folds). The backbones themselves are the config's
checkpoints throughout: the spread is that of the fusion stage, not of backbone training.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from deepfusion.config.fusion import FusionConfig
from deepfusion.config.tracking import TrackingConfig
from deepfusion.workflows.pipeline_report import FUSION_MODELS as MODELS

METRICS = ("test_accuracy", "test_weighted_f1")


@dataclass(frozen=True)
class SourceComparison:
    runs: list[dict]  # one per (source, seed): each model's test figures
    summary: dict  # source -> model -> metric -> {mean, std, values}
    json_path: Path
    markdown_path: Path


def compare_fit_sources(cfg: FusionConfig, sources: list[str], seeds: list[int], out_dir: Path, *,
                        fold_seed: int | None = None, tracking: TrackingConfig | None = None) -> SourceComparison:
    """Ray must be up. Each (source, seed) is a fresh search under ``out_dir``."""
    from deepfusion.workflows.out_of_fold import run_fusion_stage

    out_dir = Path(out_dir)
    runs = []
    for source in sources:
        for seed in seeds:
            name = f"{source}_seed{seed}"
            run_cfg = cfg.model_copy(update={
                "fit_data": cfg.fit_data.model_copy(update={
                    "source": source,
                    "seed": fold_seed if source == "out_of_fold" and fold_seed is not None else seed}),
                "search": cfg.search.model_copy(update={"seed": seed, "name": name, "verbose": 0,
                                                        "storage_path": out_dir / "tune"}),
                "export_dir": out_dir / "exports" / name})
            outcome = run_fusion_stage(run_cfg, fresh=True, tracking=tracking)
            runs.append({"source": source, "seed": seed, "fit_rows": len(outcome.fit_data.fit),
                         "select_rows": len(outcome.fit_data.select),
                         "models": {row.model: row.summary() for row in outcome.rows}})
    summary = {source: {model: {metric: _spread([r["models"][model][metric] for r in runs
                                                 if r["source"] == source])
                                for metric in METRICS}
                        for model in MODELS}
               for source in sources}
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "fusion_sources.json"
    json_path.write_text(json.dumps({"sources": sources, "seeds": seeds, "fold_seed": fold_seed,
                                     "summary": summary, "runs": runs},
                                    indent=2) + "\n")
    markdown_path = out_dir / "fusion_sources.md"
    markdown_path.write_text("\n".join(markdown_table(summary, seeds)) + "\n")
    return SourceComparison(runs, summary, json_path, markdown_path)


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "values": values}


def markdown_table(summary: dict, seeds: list[int]) -> list[str]:
    lines = [f"Test split, mean ± standard deviation over seeds {seeds} (accuracy %, weighted F1 %):", "",
             "| fusion fitted on | model | test accuracy % | test weighted F1 % |", "|---|---|---|---|"]
    for source, models in summary.items():
        for model in MODELS:
            cells = [f"{100 * models[model][m]['mean']:.2f} ± {100 * models[model][m]['std']:.2f}" for m in METRICS]
            lines.append(f"| {source} | {model} | {cells[0]} | {cells[1]} |")
    return lines
