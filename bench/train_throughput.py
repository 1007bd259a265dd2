"""Ray Train versus a plain PyTorch loop: the same model, batch, data and step code.

    python bench/train_throughput.py [--config configs/textile.yaml] [--epochs 6] [--set KEY=VALUE ...]

Plain: one process, the train split read into memory with pyarrow, shuffled each epoch,
and fed through ``run_epoch`` (the exact step Ray's workers run) with all cores as torch
threads. Ray: ``deepfusion.training.trainer.train`` (Ray Data feeding the workers,
validation and a checkpoint every epoch), once with the config's scaling (the headline
``ratio``) and once with the other layout of this machine's cores: one worker using
every core as threads, or one single-threaded DDP worker per core. The global batch is
the same everywhere. Both count training-pass samples/s; the first epoch is warm-up and
excluded. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
os.chdir(REPO_ROOT)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from deepfusion.artifacts.dataset import ShardDataset  # noqa: E402
from deepfusion.config import load_config  # noqa: E402


class InMemorySplit:
    """The train split as numpy columns, batched like ``DataIterator.iter_batches``."""

    def __init__(self, data: ShardDataset, columns: list[str], seed: int = 0):
        table = pq.read_table(data.path / "split=train", columns=columns)
        self.columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}
        self.rows = table.num_rows
        self.rng = np.random.default_rng(seed)

    def iter_batches(self, batch_size: int, **_):
        order = self.rng.permutation(self.rows)
        for start in range(0, self.rows, batch_size):
            index = order[start:start + batch_size]
            yield {c: values[index] for c, values in self.columns.items()}


def plain_pytorch(cfg, data: ShardDataset, epochs: int) -> list[float]:
    import torch
    from torch import nn

    from deepfusion.models import build_model
    from deepfusion.training.epoch import run_epoch
    from deepfusion.training.optimization import build_optimizer

    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(cfg.seed)
    model_cfg = data.resolve_model_config(cfg.model)
    model = build_model(model_cfg)
    optimizer = build_optimizer(cfg.optim, model)
    weights = torch.tensor(data.class_weights()) if cfg.optim.class_weighting else None
    split = InMemorySplit(data, data.columns(model_cfg), cfg.seed)
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        _, _, rows = run_epoch(model, split, model_cfg=model_cfg, loss_fn=nn.CrossEntropyLoss(weight=weights),
                               device=torch.device("cpu"), amp=False, num_classes=len(data.label_names),
                               batch_size=cfg.batch_size, optimizer=optimizer,
                               scaler=torch.amp.GradScaler("cuda", enabled=False),
                               grad_clip=cfg.optim.grad_clip_norm)
        rates.append(rows / (time.perf_counter() - started))
    return rates


def other_layout(scaling):
    """The other way to use this machine's cores: 1 worker x all threads <-> 1 worker per core."""
    cores = os.cpu_count() or 1
    if scaling.num_workers == 1:
        return scaling.model_copy(update={"num_workers": cores, "cpus_per_worker": 0.5, "torch_threads": 1})
    return scaling.model_copy(update={"num_workers": 1, "cpus_per_worker": 1.0, "torch_threads": cores})


def ray_train(cfg) -> dict:
    from deepfusion.training.trainer import train

    started = time.perf_counter()
    outcome = train(cfg, fresh=True)
    wall_s = time.perf_counter() - started
    rates = [m["train_samples_per_s"] for m in outcome.history]
    layout = (f"{cfg.scaling.num_workers} workers x {outcome.worker_resources}, "
              f"{cfg.scaling.torch_threads or 'default'} torch threads")
    print(f"Ray Train ({layout}): {[round(r, 1) for r in rates]} samples/s per epoch", flush=True)
    return {"layout": layout, "samples_per_s": round(float(np.mean(rates[1:] or rates)), 2),
            "wall_s": round(wall_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/textile.yaml")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per side; the first is warm-up")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    experiment = load_config(args.config, args.overrides)
    storage = Path(tempfile.mkdtemp(prefix="bench_train_"))
    cfg = experiment.require("train", args.config).model_copy(update={
        "epochs": args.epochs, "evaluate_test": False, "early_stopping_patience": args.epochs,
        "run": experiment.train.run.model_copy(update={"storage_path": storage, "name": "bench"}),
    })
    data = ShardDataset.open(cfg.data)

    plain_rates = plain_pytorch(cfg, data, args.epochs)
    print(f"plain PyTorch: {[round(r, 1) for r in plain_rates]} samples/s per epoch", flush=True)

    from deepfusion.ray_runtime import connect

    started = time.perf_counter()
    connect(experiment.ray)
    ray_start_s = time.perf_counter() - started
    configured = ray_train(cfg)
    other = ray_train(cfg.model_copy(update={"scaling": other_layout(cfg.scaling)}))

    import ray

    ray.shutdown()  # flush the workers' log lines now, so the JSON below is the last line
    plain = float(np.mean(plain_rates[1:] or plain_rates))
    print(json.dumps({
        "bench": "train_throughput", "calibration": calibration(),
        "model": f"{cfg.model.kind}/{cfg.model.preset}", "data": str(cfg.data),
        "train_rows": data.total("train"), "batch_size": cfg.batch_size, "epochs_measured": args.epochs - 1,
        "ray_layout": configured["layout"], "ray_samples_per_s": configured["samples_per_s"],
        "torch_samples_per_s": round(plain, 2), "ratio": round(configured["samples_per_s"] / plain, 3),
        "other_layout": other["layout"], "other_samples_per_s": other["samples_per_s"],
        "other_ratio": round(other["samples_per_s"] / plain, 3),
        "ray_start_s": round(ray_start_s, 2), "ray_wall_s": configured["wall_s"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
