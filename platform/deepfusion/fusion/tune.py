"""The fusion stage end to end: logit cache -> late fusion -> search -> export -> report.

1. both frozen backbones' logits on every split (``logit_cache``, Ray Data; reused
   while the checkpoints and data are unchanged);
2. the rows fusion learns from (``fit_data``: the train split, a held-out part of
   validation, or cross-fitted train logits) and the basic Late Fusion (two weights,
   cross-entropy) fitted once on them;
3. the Enhanced Late Fusion search (``search``, Ray Tune + OptunaSearch);
4. the best trial's checkpoint exported to ``fusion.export_dir`` for Serve, its card
   completed with test metrics;
5. the report (``comparison``) next to Tune's results.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from deepfusion import storage
from deepfusion.artifacts.checkpoint import load_fusion, save_fusion
from deepfusion.config.fusion import FusionConfig
from deepfusion.config.tracking import TrackingConfig
from deepfusion.fusion.comparison import ModelRow, write_report
from deepfusion.fusion.fit import evaluate, evaluate_logits, fit_fusion
from deepfusion.fusion.fit_data import FitSplits, fit_splits
from deepfusion.fusion.logit_cache import LogitCache, SplitLogits, open_or_build
from deepfusion.fusion.search import SearchOutcome, run_search, search_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FusionOutcome:
    cache: LogitCache
    cache_built: bool
    rows: list[ModelRow]
    search: SearchOutcome
    fit_data: FitSplits
    export_dir: storage.Location
    report: storage.Location


def tune_fusion(cfg: FusionConfig, *, fresh: bool = False, rebuild_cache: bool = False,
                tracking: TrackingConfig | None = None, tags: dict | None = None,
                out_of_fold: SplitLogits | None = None, callbacks: list | None = None) -> FusionOutcome:
    """Ray must be up. ``fresh`` restarts the search; ``rebuild_cache`` recomputes logits;
    ``tracking`` with MLflow on records every trial, tagged with ``tags``; ``out_of_fold``:
    the train split's cross-fitted logits (``fit_data.source: out_of_fold``); ``callbacks``:
    more ``ray.tune.Callback``s for the search."""
    cache, built = open_or_build(cfg, force=rebuild_cache)
    logits = cache.load_all()
    names = cache.label_names
    test = logits.get("test")

    rows = [
        ModelRow("MIMAMO Net", evaluate_logits(logits["val"].video, logits["val"].labels, names),
                 None if test is None else evaluate_logits(test.video, test.labels, names)),
        ModelRow("Multimodal LSTM", evaluate_logits(logits["val"].audio_text, logits["val"].labels, names),
                 None if test is None else evaluate_logits(test.audio_text, test.labels, names)),
    ]
    splits = fit_splits(cfg, logits, out_of_fold=out_of_fold)
    log.info(splits.describe())
    late = fit_fusion("late_fusion", splits.fit, splits.select, cfg.late_fusion, names, seed=cfg.search.seed)
    rows.append(_fusion_row("Late Fusion", late.model, logits, names))

    outcome = run_search(cfg, cache, splits, fresh=fresh, tracking=tracking, tags=tags, callbacks=callbacks)
    best_model, card = load_fusion(outcome.best_checkpoint)
    enhanced = _fusion_row("Enhanced Late Fusion", best_model, logits, names)
    rows.append(enhanced)
    export_dir = _export(cfg.export_dir, best_model, replace(card, metrics={
        "val": enhanced.val, "test": enhanced.test, "search": {
            "experiment_dir": str(outcome.experiment_dir),
            "trial_checkpoint": str(outcome.best_checkpoint),
            "num_trials": outcome.num_trials, "best_config": outcome.best_config},
        "fit_data": {"source": splits.source, **splits.detail, "fit_rows": len(splits.fit),
                     "select_rows": len(splits.select)}}))

    report_to = report_dir(cfg)
    report = write_report(
        storage.mirror_path(report_to) if storage.is_uri(report_to) else report_to, rows, cache=cache.card,
        study_name=cfg.search.name,
        storage_url=outcome.optuna_storage,
        fit_data=splits,
        search={"num_trials": outcome.num_trials, "num_errored": outcome.num_errored, "metric": cfg.search.metric,
                "experiment_dir": str(outcome.experiment_dir), "best_config": outcome.best_config},
    )
    if storage.is_uri(report_to):
        storage.push(storage.mirror_path(report_to), report_to)
        report = storage.join(report_to, Path(report).name)
    return FusionOutcome(cache, built, rows, outcome, splits, export_dir, report)


def report_dir(cfg: FusionConfig) -> storage.Location:
    """The fusion report's folder: beside the search's Tune results."""
    return storage.join(search_dir(cfg), "report")


def _fusion_row(name: str, model, logits: dict[str, SplitLogits], names: list[str]) -> ModelRow:
    test = logits.get("test")
    return ModelRow(name, evaluate(model, logits["val"], names),
                    None if test is None else evaluate(model, test, names),
                    [float(w) for w in model.fusion_weights().detach()])


def _export(target: storage.Location, model, card) -> storage.Location:
    """Write the serving checkpoint next to ``target`` and swap it in whole; for a storage
    URI, written on this node's mirror of it and sent (stale files removed)."""
    local = storage.mirror_path(target) if storage.is_uri(target) else Path(target)
    staging = local.with_name(local.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    save_fusion(staging, model, card, relative_to=target)
    if storage.is_uri(target):
        storage.push(staging, target, delete=True)
    shutil.rmtree(local, ignore_errors=True)
    staging.rename(local)
    log.info("best Enhanced Late Fusion exported to %s", target)
    return target
