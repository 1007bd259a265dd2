"""The driver side of training: data checks, the Ray ``TorchTrainer``, best-checkpoint
export and the test-set evaluation.

Run directory (``<run.storage_path>/<run.name>``): Ray Train's own results and
``checkpoint_epoch_*`` folders, plus ``run_config.json`` (what may not change on resume),
``tensorboard/`` (per-epoch curves), ``best/`` (the best checkpoint, the stable path later
stages use: its files are hard links to the epoch checkpoint's where the file system
allows, so it costs no second copy), ``evaluation/`` (the training-curve PNG, the test
metrics JSON and the confusion-matrix PNG) and, with MLflow on, ``mlflow_run.json`` (the
run's MLflow record, reopened on resume).

``run.storage_path`` may be a storage URI (``s3://bucket/runs``): Ray Train's workers then
write their checkpoints to the store from whichever node they run on, and a resumed run
(a lost worker, a re-run) starts from the latest one there. What the driver writes
(``best/``, ``evaluation/``, the records) is made in this node's mirror of the run folder
and sent to the store when the run ends.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs
import ray
import ray.train
from ray.data import RandomSeedConfig
from ray.train.torch import TorchConfig, TorchTrainer

from deepfusion import storage
from deepfusion.artifacts.checkpoint import checkpoint_hash
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.artifacts.freshness import claim_run_dir
from deepfusion.config.resources import DataResources
from deepfusion.config.tracking import TrackingConfig
from deepfusion.config.train import ScalingSection, TrainConfig
from deepfusion.evaluation.report import plot_training_curves
from deepfusion.models.registry import random_init_parts
from deepfusion.tracking.mlflow_runs import close_backbone_run, fail_run, open_backbone_run
from deepfusion.tracking.tensorboard import EVENTS_DIR
from deepfusion.training.loop import train_loop_per_worker
from deepfusion.training.optimization import monitor_mode

log = logging.getLogger("deepfusion.train")
BEST = "best"
CURVES_PNG = "training_curves.png"


@dataclass(frozen=True)
class TrainOutcome:
    run_dir: storage.Location  # a folder or a storage URI
    best_checkpoint: storage.Location  # <run_dir>/best
    best_metrics: dict
    epochs_completed: int
    history: list  # every epoch's reported metrics, resumed runs included
    num_workers: int
    worker_resources: dict  # Ray resources per worker, e.g. {"CPU": 0.5, "GPU": 0.5}
    resumed_from: list = ()  # epochs of the checkpoints the run restarted from (failures, re-runs)
    test_metrics_path: Path | None = None
    test_confusion_path: Path | None = None
    test_metrics: dict | None = None
    curves_path: Path | None = None  # <run_dir>/evaluation/training_curves.png
    tensorboard_dir: storage.Location | None = None  # <run_dir>/tensorboard
    mlflow_run_id: str | None = None


def scaling_config(cfg: ScalingSection) -> tuple[ray.train.ScalingConfig, TorchConfig]:
    """Ray's scaling and backend configs; GPUs only when the cluster has them."""
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = cfg.use_gpu and cluster_gpus > 0
    if cfg.use_gpu and not use_gpu:
        log.warning("no GPUs in this Ray cluster: training on CPU (scaling.use_gpu is true; "
                    "the same config uses %s GPU per worker where GPUs exist)", cfg.gpus_per_worker)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": cfg.gpus_per_worker} if use_gpu else {})}
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if use_gpu else "gloo")
    scaling = ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                      resources_per_worker=resources)
    return scaling, TorchConfig(backend=backend)


def _resume_key(cfg: TrainConfig) -> dict:
    """What a resumed run must share with the original: changing it means a new run.
    Epochs, patience, scaling and evaluation may change (train longer, on more workers)."""
    return cfg.model_dump(mode="json", include={"model", "data", "batch_size", "monitor", "optim", "seed"})


def train(cfg: TrainConfig, *, fresh: bool = False, data_resources: DataResources = DataResources(),
          tracking: TrackingConfig | None = None, tags: dict | None = None,
          callbacks: list[ray.train.UserCallback] | None = None) -> TrainOutcome:
    """Train ``cfg.model`` on ``cfg.data`` with Ray Train (Ray must be up).

    ``tracking``: TensorBoard curves (default) and the MLflow record; ``tags``: added to the
    MLflow run; ``callbacks``: Ray Train user callbacks, called on the run's controller after
    each epoch's report (its metrics and the checkpoint just registered).
    """
    tracking = tracking or TrackingConfig()
    data = ShardDataset.open(cfg.data)
    model_cfg = data.resolve_model_config(cfg.model)
    run_dir = storage.join(cfg.run.storage_path, cfg.run.name)
    local_dir = storage.mirror_path(run_dir) if storage.is_uri(run_dir) else Path(run_dir)  # the driver's files
    resuming = claim_run_dir(run_dir, _resume_key(cfg), what="run", fresh=fresh)
    if resuming:
        log.info("run %s exists: resuming from its latest checkpoint", run_dir)
    elif storage.is_uri(run_dir):  # a new run: what this node's mirror holds of an older one is stale
        shutil.rmtree(local_dir, ignore_errors=True)
    random_init = random_init_parts(model_cfg)
    if random_init:
        log.warning("%s: %s start from random weights, not pretrained ones (random-init)",
                    cfg.run.name, ", ".join(random_init))
    scaling, torch_config = scaling_config(cfg.scaling)
    columns = data.columns(model_cfg)
    mode = monitor_mode(cfg.monitor)
    mlflow_run_id = open_backbone_run(
        tracking, local_dir, run_name=cfg.run.name, params=cfg.model_dump(mode="json"),
        tags={"deepfusion.stage": "train", "deepfusion.model": cfg.model.kind,
              "deepfusion.run_dir": str(run_dir), "deepfusion.data": str(cfg.data), **(tags or {})})

    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "train": cfg.model_dump(mode="json"),
            "model": model_cfg.model_dump(mode="json"),
            "label_names": data.label_names,
            "class_weights": data.class_weights(),
            "train_rows": data.total("train"),
            "data_info": data.checkpoint_info(),
            "tracking": {"run_dir": str(run_dir), "tensorboard": tracking.tensorboard,
                         "mlflow_uri": tracking.tracking_uri, "mlflow_run_id": mlflow_run_id},
        },
        scaling_config=scaling,
        torch_config=torch_config,
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=str(storage.parent(run_dir)), callbacks=callbacks,
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=cfg.run.checkpoints_to_keep, checkpoint_score_attribute=cfg.monitor,
                checkpoint_score_order=mode),
        ),
        datasets=_datasets(data, columns, cfg),
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"], execution_options=_ordered_ingest()),
    )
    try:
        result = trainer.fit()
        best = result.get_best_checkpoint(cfg.monitor, mode)
        if best is None:
            raise RuntimeError(f"run {run_dir} produced no checkpoint")
        best_dir = _export(best, local_dir / BEST)
        best_metrics = _metrics_of(best_dir)
        if storage.is_uri(run_dir):  # readers on any node (the test-set actors, later stages) read the store's
            storage.push(best_dir, storage.join(run_dir, BEST), delete=True)
            best_dir = storage.join(run_dir, BEST)
        with result.checkpoint.as_directory() as latest_dir:
            latest = _training_state(Path(latest_dir))
        title = f"{cfg.run.name} ({cfg.model.kind}, {cfg.model.preset}) on {data.manifest['dataset']}"
        curves = plot_training_curves(latest["history"], local_dir / "evaluation" / CURVES_PNG, title=title,
                                      best_epoch=best_metrics["epoch"])
        outcome = TrainOutcome(local_dir, best_dir, best_metrics, latest["epoch"], latest["history"],
                               scaling.num_workers, dict(scaling.resources_per_worker),
                               resumed_from=latest.get("resumed_from", []), curves_path=curves,
                               tensorboard_dir=storage.join(run_dir, EVENTS_DIR) if tracking.tensorboard else None,
                               mlflow_run_id=mlflow_run_id)
        if cfg.evaluate_test and data.total("test") > 0:
            outcome = _evaluate_test(outcome, data, data_resources, cfg, title)
        published = _publish(outcome, run_dir) if storage.is_uri(run_dir) else outcome
    except BaseException:
        if mlflow_run_id is not None:
            fail_run(tracking.tracking_uri, mlflow_run_id)
        raise
    if mlflow_run_id is not None:
        close_backbone_run(tracking.tracking_uri, mlflow_run_id, best_checkpoint=outcome.best_checkpoint,
                           best_metrics=outcome.best_metrics, test_metrics=outcome.test_metrics,
                           artifacts=[outcome.curves_path, outcome.test_confusion_path, outcome.test_metrics_path],
                           history=outcome.history)
    return published


def _datasets(data: ShardDataset, columns: list[str], cfg: TrainConfig) -> dict:
    """Train and val as Ray Datasets; cached in the object store when small enough.

    Ray Train re-executes a dataset every epoch: for shards that fit, reading Parquet once
    instead of every epoch removes seconds of start-up per epoch (see bench/train_throughput.py).
    """
    train, val = data.split("train", columns), data.split("val", columns)
    for dataset in (train, val):
        # Blocks in a fixed order whatever order the read tasks finish in (here for the
        # driver's materialize; the workers' ingest takes _ordered_ingest): with the seeds
        # below, a seed gives the same rows in the same batches on every run.
        dataset.context.execution_options.preserve_order = True
        # Progress is the per-epoch lines: the bars and "Starting execution" notes of
        # datasets executed inside the workers, several per epoch, bury them.
        dataset.context.enable_progress_bars = False
        dataset.context.print_on_execution_start = False
    cache = cfg.cache_dataset == "always"
    if cfg.cache_dataset == "auto":
        free = ray.available_resources().get("object_store_memory", 0)
        # Parquet is compressed: allow 2x for the decoded rows.
        cache = 2 * data.bytes_on_disk("train", "val") < free / 5
    if cache:
        train, val = train.materialize(), val.materialize()
    log.info("train/val splits %s", "cached in the object store" if cache else "streamed from Parquet each epoch")
    # One seeded block order for the run (a new order each epoch would come from Ray's
    # execution count, which restarts when a run resumes); rows mix anew every epoch in
    # the workers' shuffle buffers, seeded per epoch (training/loop.py).
    train = train.randomize_block_order(seed=RandomSeedConfig(seed=cfg.seed, reseed_after_execution=False))
    return {"train": train, "val": val}


def _ordered_ingest():
    """Ray Train's default ingest options, with the shards' blocks kept in order."""
    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def _export(best: ray.train.Checkpoint, target: Path) -> Path:
    """Give the best checkpoint a stable path (Ray may delete the original later).

    Checkpoint files are written once and never changed, so a hard link is as good as a
    copy: deleting the epoch folder leaves ``best/`` whole. Falls back to copying where
    links are not possible (another file system, or one without hard links). A checkpoint
    in a store is fetched into ``target`` (this node's mirror of the run).
    """
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if isinstance(best.filesystem, pafs.LocalFileSystem):
        shutil.copytree(best.path, staging, copy_function=_link_or_copy)
    else:
        best.to_directory(str(staging))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _publish(outcome: TrainOutcome, run_dir: str) -> TrainOutcome:
    """Send what the driver wrote in its mirror of the run (``best/``, ``evaluation/``, the
    records) to the run's URI; the outcome then names the store's copies."""
    from dataclasses import replace

    local = Path(outcome.run_dir)
    storage.push(local, run_dir)  # best/ is there already: its files are not sent again

    def remote(path):
        return None if path is None else storage.join(run_dir, Path(path).relative_to(local).as_posix())

    return replace(outcome, run_dir=run_dir, curves_path=remote(outcome.curves_path),
                   test_metrics_path=remote(outcome.test_metrics_path),
                   test_confusion_path=remote(outcome.test_confusion_path))


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _training_state(checkpoint: Path) -> dict:
    from deepfusion.artifacts.checkpoint import load_training_state

    return load_training_state(checkpoint)


def _metrics_of(checkpoint: Path) -> dict:
    return _training_state(checkpoint)["metrics"]


def _evaluate_test(outcome: TrainOutcome, data: ShardDataset, resources: DataResources,
                   cfg: TrainConfig, title: str) -> TrainOutcome:
    from dataclasses import replace

    from deepfusion.evaluation.predict import evaluate_split
    from deepfusion.evaluation.report import write_evaluation

    evaluation = evaluate_split(outcome.best_checkpoint, data, "test", resources, cfg.eval_batch_size)
    metrics_path, figure_path = write_evaluation(
        evaluation, outcome.run_dir / "evaluation", checkpoint=outcome.best_checkpoint,
        checkpoint_hash=checkpoint_hash(outcome.best_checkpoint),
        title=title,
    )
    return replace(outcome, test_metrics_path=metrics_path, test_confusion_path=figure_path,
                   test_metrics=evaluation.metrics)

