"""The pipeline's report: the model comparison on test, and where every artifact is.

Reads what the stages wrote (each backbone's ``evaluation/test_metrics.json``, the
fusion report's ``comparison.json``), so it is the same whether a stage ran or was
skipped. Writes ``<state_dir>/report.md`` and ``summary.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from deepfusion import storage
from deepfusion.models.registry import random_init_parts
from deepfusion.workflows.pipeline_plan import PipelinePlan

FUSION_MODELS = ("MIMAMO Net", "Multimodal LSTM", "Late Fusion", "Enhanced Late Fusion")


def write_pipeline_report(plan: PipelinePlan, stages: list, serve_response: dict | None = None
                          ) -> tuple[storage.Location, dict]:
    summary = {"pipeline": shown(plan.source), "synthetic": bool(plan.pipeline.make_demo_data),
               "comparison": [], "backbones": [], "artifacts": {}, "stages": [], "serve_response": serve_response}
    for _, cfg in plan.train:
        run_dir = storage.join(cfg.run.storage_path, cfg.run.name)
        metrics = _read_json(storage.join(run_dir, "evaluation", "test_metrics.json"))
        summary["backbones"].append({
            "run": cfg.run.name, "model": cfg.model.kind, "preset": cfg.model.preset,
            "random_init": random_init_parts(cfg.model),
            "checkpoint": shown(storage.join(run_dir, "best")),
            "confusion_png": shown(storage.join(run_dir, "evaluation", "test_confusion.png")),
            "curves_png": shown(storage.join(run_dir, "evaluation", "training_curves.png")),
            "tensorboard": shown(storage.join(run_dir, "tensorboard")),
            "test_accuracy": None if metrics is None else metrics["accuracy"],
            "test_weighted_f1": None if metrics is None else metrics["weighted_f1"],
        })
    if plan.fusion is not None:
        from deepfusion.fusion.search import optuna_storage_url, search_dir
        from deepfusion.fusion.tune import report_dir

        _, cfg = plan.fusion
        summary["comparison"] = _read_json(storage.join(report_dir(cfg), "comparison.json")) or []
        folder = report_dir(cfg)
        summary["artifacts"] |= {
            "fusion_report": shown(storage.join(folder, "report.md")),
            "plots": [shown(storage.join(folder, p)) for p in sorted(storage.files(folder)) if p.endswith(".png")],
            "tune_results": shown(search_dir(cfg)),
            "optuna_study": optuna_storage_url(cfg),
            "fusion_checkpoint": shown(cfg.export_dir),
            "logit_cache": shown(cfg.cache_dir),
        }
    summary["artifacts"]["backbone_checkpoints"] = [b["checkpoint"] for b in summary["backbones"]]
    summary["artifacts"]["training_curves"] = [b["curves_png"] for b in summary["backbones"]]
    summary["watch"] = _watch_commands(plan, summary)
    summary["stages"] = [{"stage": s.stage, "status": s.status, "wall_s": round(s.wall_s, 1), "detail": s.detail}
                         for s in stages]

    folder = plan.pipeline.state_dir
    report = storage.join(folder, "report.md")
    summary["artifacts"]["report"] = shown(report)
    storage.write_text(report, _markdown(summary))
    storage.write_text(storage.join(folder, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return report, summary


def comparison_table(summary: dict) -> list[str]:
    """The fusion comparison (test accuracy and weighted F1, %) as aligned text lines."""
    lines = [f"{'model':<22} {'test acc %':>10} {'test wF1 %':>10}  fusion weights (video, audio-text)"]
    for row in summary["comparison"]:
        weights = row.get("fusion_weights")
        shown = "" if weights is None else f"{weights[0]:.3f}, {weights[1]:.3f}"
        lines.append(f"{row['model']:<22} {_pct(row.get('test_accuracy')):>10} {_pct(row.get('test_weighted_f1')):>10}"
                     f"  {shown}")
    for b in summary["backbones"]:
        if b["model"] == "textile":
            lines.append(f"{'Textile (' + b['run'] + ')':<22} {_pct(b['test_accuracy']):>10} "
                         f"{_pct(b['test_weighted_f1']):>10}  (3-class image classifier)")
    return lines


def _markdown(summary: dict) -> str:
    data = "SYNTHETIC demo corpora (plumbing, not a result)" if summary["synthetic"] else "the configured datasets"
    lines = ["# Pipeline report", "", f"Pipeline `{summary['pipeline']}` on {data}.", "",
             "## Models on the test split", "", "```", *comparison_table(summary), "```", "",
             "## Stages", "", "| stage | status | wall s | detail |", "|---|---|---|---|"]
    lines += [f"| {s['stage']} | {s['status']} | {s['wall_s']} | {s['detail']} |" for s in summary["stages"]]
    if summary["serve_response"] is not None:
        lines += ["", "## The Serve app's answer to one test utterance", "", "```json",
                  json.dumps(summary["serve_response"], indent=2), "```"]
    lines += ["", "## Watching and browsing the runs", ""]
    lines += [f"- {what}: `{command}`" for what, command in summary["watch"].items()]
    lines += ["", "## Artifacts", ""]
    for key, value in summary["artifacts"].items():
        values = value if isinstance(value, list) else [value]
        lines += [f"- {key}: " + ", ".join(f"`{v}`" for v in values)]
    return "\n".join(lines) + "\n"


def _watch_commands(plan: PipelinePlan, summary: dict) -> dict:
    """The one-line commands that open this pipeline's curves, sweep and records."""
    logdirs = [storage.join(cfg.run.storage_path, cfg.run.name, "tensorboard") for _, cfg in plan.train]
    if plan.fusion is not None:
        from deepfusion.fusion.search import search_dir

        logdirs.append(search_dir(plan.fusion[1]))
    watch = {}
    if logdirs:
        # TensorBoard finds event files in every folder under its logdir: their common parent
        # (TensorBoard reads s3:// and gs:// logdirs itself).
        local = [p for p in logdirs if not storage.is_uri(p)]
        if local:
            common = Path(os.path.commonpath([str(Path(p).resolve()) for p in local]))
            watch["TensorBoard (backbone curves and fusion trials)"] = f"tensorboard --logdir {shown(common)}"
        remote = [p for p in logdirs if storage.is_uri(p)]
        if remote:
            common = os.path.commonpath([p.split("://", 1)[1] for p in remote])
            watch["TensorBoard (from the store)"] = f"tensorboard --logdir {remote[0].split('://')[0]}://{common}"
    if "optuna_study" in summary["artifacts"]:
        watch["optuna-dashboard (the fusion study)"] = f"optuna-dashboard {summary['artifacts']['optuna_study']}"
    tracking = plan.experiment.tracking
    if tracking.tracking_uri is not None:
        watch[f"MLflow (experiment {tracking.experiment!r})"] = (
            f"mlflow ui --backend-store-uri {tracking.tracking_uri}" if tracking.mlflow_uri is None
            else f"open {tracking.mlflow_uri}")
    return watch


def shown(path) -> str:
    """A path as the user will type it: relative to the working folder when inside it (a
    storage URI as it is)."""
    if storage.is_uri(path):
        return path
    absolute = Path(path).resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _read_json(path: storage.Location):
    try:
        return json.loads(storage.read_text(path))
    except (OSError, ValueError):
        return None
