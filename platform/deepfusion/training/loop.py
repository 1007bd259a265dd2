"""The Ray Train worker loop: plain PyTorch epochs over this worker's Ray Data shard.

Each epoch trains on the worker's part of the train split (DDP keeps replicas equal),
evaluates the whole validation split, sums confusion matrices over workers, reports
metrics, and saves a checkpoint from rank 0; rank 0 also writes the epoch's TensorBoard
curves and, when tracked, its MLflow metrics. A restarted run (same run name, or a
worker failure under ``FailureConfig``) resumes from the latest checkpoint.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from pydantic import TypeAdapter
from torch import nn

from deepfusion import storage
from deepfusion.artifacts.checkpoint import WEIGHTS, load_training_state, save_checkpoint
from deepfusion.augment import BatchAugmentation
from deepfusion.config.architectures import ModelConfig
from deepfusion.config.train import TrainConfig
from deepfusion.evaluation.metrics import classification_metrics, flat_metrics
from deepfusion.models import build_model
from deepfusion.models.losses import build_loss
from deepfusion.ray_runtime import quiet_ray_train_reports
from deepfusion.tracking.mlflow_runs import log_epoch, store_on_this_node
from deepfusion.tracking.tensorboard import EpochCurves
from deepfusion.training.epoch import run_epoch
from deepfusion.training.optimization import EarlyStopping, build_optimizer, build_scheduler, monitor_mode
from deepfusion.training.text_states import text_state_cache

# Ray Train routes worker logging (and print) to the driver's console and its log files.
log = logging.getLogger("deepfusion.train")


def worker_device() -> torch.device:
    """This worker's GPU when Ray assigned one and CUDA works, else the CPU.

    A cluster may advertise GPU resources torch cannot use (a CPU build, a test cluster
    declaring num_gpus); the run then still proceeds, on CPU.
    """
    if torch.cuda.is_available() and ray.get_gpu_ids():
        return ray.train.torch.get_device()
    return torch.device("cpu")


def train_loop_per_worker(loop_config: dict) -> None:
    quiet_ray_train_reports()
    cfg = TrainConfig.model_validate(loop_config["train"])
    model_cfg = TypeAdapter(ModelConfig).validate_python(loop_config["model"])
    label_names: list[str] = loop_config["label_names"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = worker_device()
    amp = cfg.scaling.amp and device.type == "cuda"
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    log.info("worker rank %d/%d: torch device %s, Ray GPU ids %s, AMP %s, node %s",
             rank, world, device, ray.get_gpu_ids(), "on" if amp else "off", ray.get_runtime_context().get_node_id())

    torch.manual_seed(cfg.seed)
    model = build_model(model_cfg).to(device)
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            gradient_as_bucket_view=True)  # grads live in the all-reduce buckets: no copies
    optimizer = build_optimizer(cfg.optim, model)
    batch_size = cfg.batch_size // world  # the configured batch is global
    steps_per_epoch = math.ceil((loop_config["train_rows"] // world) / batch_size)  # optimizer steps
    micro_batch = batch_size // cfg.grad_accumulation
    scheduler, step_each_batch = build_scheduler(cfg.optim, optimizer, epochs=cfg.epochs,
                                                 steps_per_epoch=steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    stopper = EarlyStopping(cfg.early_stopping_patience, monitor_mode(cfg.monitor))

    # resumed_from: the epoch of every checkpoint this run restarted from (a worker failure
    # under FailureConfig, or the job started again): how a run got its epochs is auditable.
    start_epoch, history, resumed_from = 1, [], []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        from safetensors.torch import load_file

        with checkpoint.as_directory() as folder:
            model.load_state_dict(load_file(str(Path(folder) / WEIGHTS), device=str(device)))
            state = load_training_state(Path(folder), device)
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["early_stopping"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        resumed_from = state.get("resumed_from", []) + [state["epoch"]]
        if rank == 0:
            log.info("resumed from epoch %d (%s)", state["epoch"], checkpoint.path)
    if stopper.should_stop:
        return  # the run had already stopped early

    loss_fn = build_loss(cfg.optim, loop_config["class_weights"], device)
    text_states = text_state_cache(model, model_cfg) if cfg.cache_text_states else None
    epoch_args = dict(model_cfg=model_cfg, loss_fn=loss_fn, device=device, amp=amp, num_classes=len(label_names),
                      batch_size=micro_batch, group_by_length=cfg.group_by_length, text_states=text_states)
    settings = cfg.training_augmentation
    augment = BatchAugmentation(settings) if settings is not None else None
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")

    tracking = loop_config.get("tracking") or {}
    curves = (EpochCurves(storage.location(tracking["run_dir"]), start_epoch)
              if rank == 0 and tracking.get("tensorboard") else None)
    mlflow_run = (tracking.get("mlflow_uri"), tracking.get("mlflow_run_id")) if rank == 0 else (None, None)
    if mlflow_run[1] is not None and not store_on_this_node(mlflow_run[0]):
        log.info("MLflow: the store %s is not on this node; the driver logs the epochs when training ends",
                 mlflow_run[0])
        mlflow_run = (None, None)
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            started = time.perf_counter()
            # Each epoch seeds its own streams (shuffle, batch order, dropout, augmentation), so a
            # rerun, or a run resumed from a checkpoint, repeats the epochs of an uninterrupted one.
            rng = np.random.default_rng([cfg.seed, epoch, rank])
            torch.manual_seed(int(rng.integers(2**62)))
            train_confusion, train_loss, train_rows = run_epoch(
                trained, train_shard, optimizer=optimizer, scaler=scaler, grad_clip=cfg.optim.grad_clip_norm,
                scheduler=scheduler if step_each_batch else None, shuffle_buffer_rows=cfg.shuffle_buffer_rows,
                rng=rng, augment=augment, grad_accumulation=cfg.grad_accumulation,
                rdrop_alpha=cfg.optim.rdrop_alpha, **epoch_args)
            train_s = time.perf_counter() - started
            train_confusion, train_loss, train_rows = _sum_over_workers(train_confusion, train_loss, train_rows)
            # Every worker evaluates the whole (unsplit) validation set; rank 0's figures are
            # broadcast so that scheduler and early-stopping decisions agree to the last bit.
            val_confusion, val_loss, val_rows = _from_rank_zero(*run_epoch(model, val_shard, **epoch_args))
            train = classification_metrics(train_confusion, label_names)
            val = classification_metrics(val_confusion, label_names)
            metrics = {
                "epoch": epoch,
                **flat_metrics("train", train, train_loss / max(train_rows, 1)),
                **flat_metrics("val", val, val_loss / max(val_rows, 1)),
                "lr": optimizer.param_groups[0]["lr"],
                **{f"lr_{g['name']}": g["lr"] for g in optimizer.param_groups[1:]},
                "train_samples": train_rows,
                "train_samples_per_s": round(train_rows / train_s, 2),  # all workers, training pass only
                "epoch_s": round(time.perf_counter() - started, 2),
            }
            if scheduler is not None and not step_each_batch:
                scheduler.step(metrics["val_loss"])
            improved = stopper.update(metrics[cfg.monitor], epoch)
            metrics.update(is_best=improved, best_epoch=stopper.best_epoch, **{f"best_{cfg.monitor}": stopper.best})
            history.append(metrics)
            if rank == 0:
                log.info(_epoch_line(metrics, cfg.epochs))
                if text_states is not None and epoch == start_epoch:
                    log.info("frozen text encoder: the states of %d samples computed once, reused from now on",
                             len(text_states))
                _track(metrics, curves, *mlflow_run)
            with tempfile.TemporaryDirectory() as folder:
                saved = None
                if rank == 0:
                    save_checkpoint(
                        Path(folder), model, model_config=model_cfg, label_names=label_names,
                        data_info=loop_config["data_info"], train_config=loop_config["train"],
                        training_state={
                            "epoch": epoch, "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "scaler": scaler.state_dict(), "early_stopping": stopper.state_dict(),
                            "metrics": metrics, "history": history, "resumed_from": resumed_from,
                        })
                    saved = ray.train.Checkpoint.from_directory(folder)
                ray.train.report(metrics, checkpoint=saved, checkpoint_dir_name=f"checkpoint_epoch_{epoch:04d}")
            if stopper.should_stop:
                if rank == 0:
                    log.info("early stop: no better %s for %d epochs (best %.4f at epoch %d)",
                             cfg.monitor, stopper.patience, stopper.best, stopper.best_epoch)
                break
    finally:
        if curves is not None:
            curves.close()


def _track(metrics: dict, curves: EpochCurves | None, mlflow_uri: str | None, mlflow_run_id: str | None) -> None:
    """Rank 0: the epoch's curves to TensorBoard and, when tracked, to the run's MLflow record."""
    if curves is not None:
        curves.epoch(metrics)
    if mlflow_run_id is not None:
        try:
            log_epoch(mlflow_uri, mlflow_run_id, metrics)
        except Exception as err:  # noqa: BLE001 - a tracking server's hiccup must not stop training
            log.warning("MLflow: epoch %d not logged: %s", metrics["epoch"], err)


def _sum_over_workers(confusion: torch.Tensor, loss_sum: float, rows: int):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return confusion.cpu().numpy(), loss_sum, rows
    totals = torch.tensor([loss_sum, rows], dtype=torch.float64, device=confusion.device)
    dist.all_reduce(confusion)
    dist.all_reduce(totals)
    return confusion.cpu().numpy(), float(totals[0]), int(totals[1])


def _from_rank_zero(confusion: torch.Tensor, loss_sum: float, rows: int):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return confusion.cpu().numpy(), loss_sum, rows
    totals = torch.tensor([loss_sum, rows], dtype=torch.float64, device=confusion.device)
    dist.broadcast(confusion, src=0)
    dist.broadcast(totals, src=0)
    return confusion.cpu().numpy(), float(totals[0]), int(totals[1])


def _epoch_line(m: dict, epochs: int) -> str:
    best = " *" if m["is_best"] else ""
    return (f"epoch {m['epoch']:3d}/{epochs}  train loss {m['train_loss']:.4f} acc {m['train_accuracy']:.3f} "
            f"wF1 {m['train_weighted_f1']:.3f} | val loss {m['val_loss']:.4f} acc {m['val_accuracy']:.3f} "
            f"wF1 {m['val_weighted_f1']:.3f} | lr {m['lr']:.2e} {m['epoch_s']:.1f}s{best}")
