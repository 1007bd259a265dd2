"""Running the pipeline: each stage in order, skipped when its inputs are unchanged.

    demo data -> preprocess -> train each backbone -> fusion (logit cache, late fusion,
    Tune sweep, test evaluation, export) -> report -> Serve app + one request

Every stage decides by the one freshness rule (``artifacts.freshness``): demo data and
preprocessing by the records beside what they write (the corpus stamp, each dataset's
manifest); training and fusion by a ``StageLedger``, whose inputs are the resolved stage
config and the hashes of the artifacts they read,
so retraining MIMAMO Net redoes the fusion but not the LSTM, and editing only the
fusion file redoes only the fusion. Ray must be up.

The pipeline file's ``tracking`` section applies to every stage it runs (the stage
files' own are for their jobs run alone): one MLflow experiment holds the pipeline's
backbone runs and fusion trials, each tagged ``deepfusion.pipeline``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from deepfusion import storage
from deepfusion.artifacts.freshness import StageLedger
from deepfusion.artifacts.shards import MANIFEST
from deepfusion.config.resources import DataResources
from deepfusion.hashing import sha256_bytes
from deepfusion.workflows.pipeline_plan import PipelinePlan

log = logging.getLogger("deepfusion.pipeline")


@dataclass
class StageResult:
    stage: str
    status: str  # "ran", "resumed", "skipped" (inputs unchanged), "up to date" (own check)
    wall_s: float
    detail: str = ""


@dataclass
class PipelineRun:
    plan: PipelinePlan
    stages: list[StageResult] = field(default_factory=list)
    serve_response: dict | None = None
    report: storage.Location | None = None
    summary: dict | None = None


def pipeline(plan: PipelinePlan, *, redo: frozenset[str] = frozenset()) -> PipelineRun:
    """Run every stage of ``plan``; stages named in ``redo`` run from scratch.

    ``redo`` takes stage names as printed: ``demo_data``, ``preprocess``,
    ``train/<run name>``, ``fusion``, or ``all``.
    """
    run = PipelineRun(plan)
    ledger = StageLedger(plan.pipeline.state_dir)
    redo_all = "all" in redo
    total = _stage_count(plan)

    def announce(stage: str) -> None:
        log.info("==> [%d/%d] %s", len(run.stages) + 1, total, stage)

    if plan.pipeline.make_demo_data:
        announce("demo_data")
        run.stages.append(_demo_data(plan, force=redo_all or "demo_data" in redo))
    if plan.pipeline.preprocess:
        announce("preprocess")
        run.stages.append(_preprocess(plan, force=redo_all or "preprocess" in redo))
    resources = plan.experiment.preprocess.data if plan.experiment.preprocess else DataResources()
    for _, cfg in plan.train:
        stage = f"train/{cfg.run.name}"
        announce(stage)
        run.stages.append(_train(plan, cfg, ledger, resources, force=redo_all or stage in redo))
    if plan.fusion is not None:
        announce("fusion")
        run.stages.append(_fusion(plan, ledger, force=redo_all or "fusion" in redo))
    announce("report")
    from deepfusion.workflows.pipeline_report import write_pipeline_report

    started = time.perf_counter()
    run.report, run.summary = write_pipeline_report(plan, run.stages)
    run.stages.append(StageResult("report", "ran", time.perf_counter() - started, str(run.report)))
    if plan.serve is not None and plan.serve[1].deploy:
        announce("serve")
        from deepfusion.workflows.serve_check import deploy_and_ask

        started = time.perf_counter()
        run.serve_response = answered = deploy_and_ask(plan)
        run.stages.append(StageResult("serve", "ran", time.perf_counter() - started,
                                      f"{answered['url']} answered " + (
                                          repr(answered["response"]["emotion"]) if answered["request"]
                                          else f"with its models {sorted(answered['response'])}")))
        run.report, run.summary = write_pipeline_report(plan, run.stages, run.serve_response)
    return run


def _pipeline_tags(plan: PipelinePlan) -> dict:
    """MLflow tags of every run the pipeline starts (all in its file's ``tracking.experiment``)."""
    return {"deepfusion.pipeline": str(Path(plan.source).resolve())}


def _stage_count(plan: PipelinePlan) -> int:
    p = plan.pipeline
    return (int(p.make_demo_data) + int(p.preprocess) + len(plan.train) + int(plan.fusion is not None) + 1
            + int(plan.serve is not None and plan.serve[1].deploy))


def _demo_data(plan: PipelinePlan, *, force: bool) -> StageResult:
    from deepfusion.demo import make_demo_data

    started = time.perf_counter()
    cfg = plan.experiment.demo_data
    written, stamp = make_demo_data(cfg, force=force)
    return StageResult("demo_data", "ran" if written else "up to date", time.perf_counter() - started,
                       f"SYNTHETIC corpora in {cfg.out}: {stamp['meld_rows']} utterances, "
                       f"{stamp['textile_images']} images")


def _preprocess(plan: PipelinePlan, *, force: bool) -> StageResult:
    from deepfusion.preprocess.datasets import preprocess

    started = time.perf_counter()
    results = preprocess(plan.experiment.preprocess, force=force)
    done = [r for r in results if not r.skipped]
    detail = "; ".join(f"{r.name}: {'up to date' if r.skipped else 'written'}, "
                       f"{r.manifest['quarantined']} quarantined" for r in results)
    return StageResult("preprocess", "ran" if done else "up to date", time.perf_counter() - started, detail)


def _decide(ledger: StageLedger, stage: str, inputs: dict, outputs, force: bool) -> str:
    decision = "fresh" if force else ledger.decide(stage, inputs, outputs)
    reasons = {"skip": "inputs and outputs unchanged since its last run: skipped",
               "resume": "interrupted (or its outputs changed) with the same inputs: resuming",
               "fresh": "new inputs (or no record of a run): running from the start"}
    log.info("%s: %s", stage, "redo asked: running from the start" if force else reasons[decision])
    return decision


def _train(plan: PipelinePlan, cfg, ledger: StageLedger, resources: DataResources, *, force: bool) -> StageResult:
    from deepfusion.artifacts.checkpoint import checkpoint_hash
    from deepfusion.training.trainer import train

    stage = f"train/{cfg.run.name}"
    best = plan.best_checkpoint(cfg)
    inputs = {"config": cfg.model_dump(mode="json"), "data_manifest": _file_hash(storage.join(cfg.data, MANIFEST))}
    evaluation = storage.join(storage.parent(best), "evaluation", "test_metrics.json")

    def outputs() -> dict:
        made = {"best": checkpoint_hash(best)}
        if cfg.evaluate_test:
            made["test_metrics"] = _file_hash(evaluation)
        return made

    decision = _decide(ledger, stage, inputs, outputs, force)
    if decision == "skip":
        return StageResult(stage, "skipped", 0.0, str(best))
    started = time.perf_counter()
    ledger.started(stage, inputs)
    outcome = train(cfg, fresh=decision == "fresh", data_resources=resources, tracking=plan.experiment.tracking,
                    tags=_pipeline_tags(plan))
    wall_s = time.perf_counter() - started
    ledger.finished(stage, inputs, outputs(), wall_s)
    detail = f"{outcome.epochs_completed} epochs, best {cfg.monitor} {outcome.best_metrics[cfg.monitor]:.4f}"
    return StageResult(stage, "resumed" if decision == "resume" else "ran", wall_s, detail)


def _fusion(plan: PipelinePlan, ledger: StageLedger, *, force: bool) -> StageResult:
    from deepfusion.artifacts.checkpoint import checkpoint_hash
    from deepfusion.fusion.tune import report_dir
    from deepfusion.workflows.out_of_fold import run_fusion_stage

    _, cfg = plan.fusion
    inputs = {"config": cfg.model_dump(mode="json"), "data_manifest": _file_hash(storage.join(cfg.data, MANIFEST)),
              "video_checkpoint": checkpoint_hash(cfg.video_checkpoint),
              "audio_text_checkpoint": checkpoint_hash(cfg.audio_text_checkpoint)}
    comparison = storage.join(report_dir(cfg), "comparison.json")

    def outputs() -> dict:
        return {"export": checkpoint_hash(cfg.export_dir), "comparison": _file_hash(comparison)}

    decision = _decide(ledger, "fusion", inputs, outputs, force)
    if decision == "skip":
        return StageResult("fusion", "skipped", 0.0, str(cfg.export_dir))
    started = time.perf_counter()
    ledger.started("fusion", inputs)
    outcome = run_fusion_stage(cfg, fresh=decision == "fresh", tracking=plan.experiment.tracking,
                               tags=_pipeline_tags(plan))
    wall_s = time.perf_counter() - started
    ledger.finished("fusion", inputs, outputs(), wall_s)
    search = outcome.search
    detail = (f"logit cache {'built' if outcome.cache_built else 'reused'}; {search.num_trials} trials "
              f"({search.num_errored} errored)")
    return StageResult("fusion", "resumed" if decision == "resume" else "ran", wall_s, detail)


def _file_hash(where: storage.Location) -> str:
    """A file's content hash, in a folder or a store (``FileNotFoundError`` when gone)."""
    return sha256_bytes(storage.read_bytes(where))
