"""The paper-size backbones on a GPU: training step speed and peak memory, fp32 vs AMP; Ray Train and Serve.

    python bench/gpu.py [--device cuda] [--steps 20] [--warmup 3] [--models textile,mimamo,multimodal_lstm]
                        [--no-ray]

On a machine without CUDA it prints one line saying so and exits 0 (``--device cpu``
runs everything on the CPU instead, small: a check of the script, not a measurement).

What the cluster in ``cluster.yaml`` would run: each backbone at the ``paper`` preset
(ResNet-50 at 224 px; MIMAMO on 8 frames of 224 px with BERT-base text; BERT-base +
Wav2Vec2-base for the Multimodal LSTM), random weights (hub weights cost the same),
at the per-worker batch of two Ray Train workers sharing one card (half of the shipped
configs' global batch). Each model trains side by side in fp32 and with AMP (fp16
autocast + GradScaler, what ``train.scaling.amp`` turns on), through
``deepfusion.training.epoch.run_epoch``, the step the Ray Train workers run, fed
synthetic shard rows (the same columns and decoding as Parquet shards). Reported per
model and precision: training samples/s, the peak memory torch allocated and reserved,
and whether the reserved peak plus a CUDA context fits half of a 12 GiB RTX 3060. Also
batch-1 and batch-8 inference latency, what a Serve replica answers. That part needs no
Ray: it measures the per-worker compute.

Then, with Ray (``bench/gpu_ray.py``): one epoch of the paper textile net under Ray Train
with two workers at 0.5 GPU each (both on the one card), and the composed Serve
application on paper-preset MIMAMO Net and Multimodal LSTM replicas at 0.5 GPU each:
``/v1/emotion`` latency over HTTP against the 30 ms p50 target. The whole run takes
about 5 minutes on an H100.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "platform"))  # the library without installing it

import torch  # noqa: E402

from deepfusion.config import OptimConfig, TrainConfig, load_config  # noqa: E402
from deepfusion.config.architectures import RANDOM_INIT_FIELDS, random_init_overrides  # noqa: E402
from deepfusion.models import build_model  # noqa: E402
from deepfusion.training.epoch import run_epoch  # noqa: E402
from deepfusion.training.optimization import build_optimizer  # noqa: E402

GIB = 1024 ** 3
HALF_RTX3060_GIB = 6.0  # two workers per 12 GiB card
CUDA_CONTEXT_GIB = 0.5  # CUDA context + cuDNN/cuBLAS workspaces, outside torch's allocator

# The paper's own train configs (configs/paper), with random weights: the hubs may be out of reach.
PAPER = REPO_ROOT / "configs" / "paper"
MODELS = tuple(RANDOM_INIT_FIELDS)


def paper_train_config(name: str) -> TrainConfig:
    """``configs/paper/<name>.yaml``'s train section, offline: its model and its batches (global,
    per worker of 2, per forward pass with ``grad_accumulation``)."""
    return load_config(PAPER / f"{name}.yaml", random_init_overrides(name)).train


def as_pretrained(model: torch.nn.Module) -> torch.nn.Module:
    """Freeze what the paper preset freezes once pretrained weights are loaded: Wav2Vec2's CNN
    feature encoder (``audio_encoder.freeze_feature_encoder``, applied to loaded weights
    only). Random weights otherwise train it, which costs several GB of activations more."""
    for module in model.modules():
        if hasattr(module, "freeze_feature_encoder"):
            module.freeze_feature_encoder()
    return model


class SyntheticShard:
    """Batches of shard rows (numpy columns, as Ray Data's ``iter_batches`` yields)."""

    def __init__(self, kind: str, rows: int, *, frame_size: int, num_frames: int, text_length: int,
                 audio_seconds: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.columns: dict[str, np.ndarray] = {"label": rng.integers(0, 3 if kind == "textile" else 7, rows)}
        if kind == "textile":
            pixels = frame_size * frame_size * 3
            self.columns.update(
                image=np.array([rng.integers(0, 256, pixels, dtype=np.uint8).tobytes() for _ in range(rows)],
                               dtype=object),
                height=np.full(rows, frame_size), width=np.full(rows, frame_size))
            return
        self.columns.update(
            speaker_id=np.zeros(rows, dtype=np.int64), gender=np.array(["female"] * rows, dtype=object),
            age=np.array([None] * rows, dtype=object),
            input_ids=np.array([rng.integers(1000, 30000, text_length).astype(np.int32) for _ in range(rows)],
                               dtype=object),
            has_text=np.ones(rows, dtype=bool))
        if kind == "mimamo":
            pixels = num_frames * frame_size * frame_size * 3
            self.columns.update(
                video_frames=np.array([rng.integers(0, 256, pixels, dtype=np.uint8).tobytes() for _ in range(rows)],
                                      dtype=object),
                num_frames=np.full(rows, num_frames), frame_size=np.full(rows, frame_size),
                has_video=np.ones(rows, dtype=bool))
        else:
            samples = int(audio_seconds * 16000)
            self.columns.update(
                audio=np.array([rng.standard_normal(samples).astype(np.float32) * 0.1 for _ in range(rows)],
                               dtype=object),
                has_audio=np.ones(rows, dtype=bool))
        self.rows = rows

    def iter_batches(self, batch_size: int, **_):
        rows = len(self.columns["label"])
        for start in range(0, rows - batch_size + 1, batch_size):
            yield {c: v[start:start + batch_size] for c, v in self.columns.items()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_side(name: str, model_cfg, batch: int, *, amp: bool, device: torch.device, steps: int,
               warmup: int, shard_args: dict) -> dict:
    torch.manual_seed(0)
    model = as_pretrained(build_model(model_cfg)).to(device)
    optimizer = build_optimizer(OptimConfig(optimizer="adamw", lr=1e-4), model)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    num_classes = model_cfg.num_classes
    args = dict(model_cfg=model_cfg, loss_fn=torch.nn.CrossEntropyLoss(), device=device, amp=amp,
                num_classes=num_classes, batch_size=batch, optimizer=optimizer, scaler=scaler, grad_clip=1.0)
    run_epoch(model, SyntheticShard(name, batch * warmup, seed=1, **shard_args), **args)
    shard = SyntheticShard(name, batch * steps, seed=2, **shard_args)
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    _, loss_sum, rows = run_epoch(model, shard, **args)
    synchronize(device)
    wall = time.perf_counter() - started
    side = {"samples_per_s": round(rows / wall, 2), "step_ms": round(1000 * wall / steps, 1),
            "loss": round(loss_sum / rows, 4)}
    if device.type == "cuda":
        reserved = torch.cuda.max_memory_reserved(device) / GIB
        side.update(peak_allocated_gib=round(torch.cuda.max_memory_allocated(device) / GIB, 2),
                    peak_reserved_gib=round(reserved, 2),
                    fits_half_rtx3060=reserved + CUDA_CONTEXT_GIB <= HALF_RTX3060_GIB)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return side


def inference_latency(name: str, model_cfg, *, device: torch.device, repeats: int, shard_args: dict) -> dict:
    from deepfusion.artifacts.batches import model_batch_inputs

    model = build_model(model_cfg).to(device).eval()
    out = {}
    for batch in (1, 8):
        rows = next(SyntheticShard(name, batch, seed=3, **shard_args).iter_batches(batch))
        inputs = model_batch_inputs(model_cfg, rows).to(device)
        times = []
        with torch.inference_mode():
            for i in range(repeats + 2):
                synchronize(device)
                started = time.perf_counter()
                model(inputs)
                synchronize(device)
                if i >= 2:
                    times.append(1000 * (time.perf_counter() - started))
        out[f"infer_b{batch}_ms"] = round(statistics.median(times), 2)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def measure(name: str, args, device: torch.device, shard_args: dict) -> dict:
    train_cfg = paper_train_config(name)
    model_cfg = train_cfg.model
    batch = max(1, train_cfg.micro_batch_size // args.batch_divisor)  # one forward pass of one worker
    row = {"micro_batch": batch, "grad_accumulation": train_cfg.grad_accumulation,
           "worker_batch": train_cfg.worker_batch_size, "global_batch": train_cfg.batch_size,
           "workers": train_cfg.scaling.num_workers}
    sides = [("fp32", False)] + ([("amp", True)] if device.type == "cuda" else [])
    for label, amp in sides:
        row[label] = train_side(name, model_cfg, batch, amp=amp, device=device, steps=args.steps,
                                warmup=args.warmup, shard_args=shard_args)
        print(f"{name:16s} {label:4s} micro-batch {batch:3d}: {json.dumps(row[label])}", flush=True)
    if "amp" in row:
        row["amp_speedup"] = round(row["amp"]["samples_per_s"] / row["fp32"]["samples_per_s"], 2)
    row.update(inference_latency(name, model_cfg, device=device, repeats=max(3, args.steps),
                                 shard_args=shard_args))
    print(f"{name:16s} inference: b1 {row['infer_b1_ms']} ms, b8 {row['infer_b8_ms']} ms", flush=True)
    return row


def ray_parts(args, device: torch.device) -> dict:
    """Ray Train with 2 workers x 0.5 GPU, and Serve on paper-preset replicas (bench/gpu_ray.py)."""
    import tempfile

    import gpu_ray
    import ray

    from deepfusion.ray_runtime import use_serve_environment

    cuda = device.type == "cuda"
    use_serve_environment()  # before ray.serve is imported, as every deepfusion node does
    ray.init(address="local", num_cpus=os.cpu_count(), num_gpus=1 if cuda else 0, include_dashboard=False,
             log_to_driver=False)
    out = {}
    with tempfile.TemporaryDirectory(prefix="deepfusion-gpu-bench-") as root:
        for name, run in (
                ("ray_train", lambda: gpu_ray.ray_train(Path(root) / "train", gpus_per_worker=0.5, use_gpu=cuda,
                                                        image_size=224 if cuda else 64,
                                                        per_class=200 if cuda else 12)),
                ("serve", lambda: gpu_ray.serve(Path(root) / "serve", num_gpus=0.5 if cuda else 0,
                                                num_cpus=1 if cuda else 0.25,
                                                frame_size=224 if cuda else 48,
                                                requests=args.serve_requests if cuda else 4))):
            started = time.perf_counter()
            try:
                out[name] = run()
            except Exception as err:  # noqa: BLE001 - one part failing still reports the others
                out[name] = {"error": f"{type(err).__name__}: {err}"}
            out[name]["part_wall_s"] = round(time.perf_counter() - started, 1)
            print(f"{name}: {json.dumps(out[name])}", flush=True)
    ray.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="cuda (the default where CUDA works) or cpu")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per side")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--batch-divisor", type=int, default=1,
                        help="divide every per-worker batch (a quick CPU check of the script)")
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--audio-seconds", type=float, default=6.0)
    parser.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray Train and Serve parts")
    parser.add_argument("--serve-requests", type=int, default=64)
    args = parser.parse_args()
    if args.device is None and not torch.cuda.is_available():
        print(json.dumps({"bench": "gpu", "skipped": f"no CUDA device on this machine (torch {torch.__version__}, "
                          f"CUDA build {torch.version.cuda}); nothing measured. --device cpu checks the script."}))
        return
    device = torch.device(args.device or "cuda")
    torch.backends.cudnn.benchmark = False  # as the training loop runs
    shard_args = dict(frame_size=args.frame_size, num_frames=8, text_length=args.text_length,
                      audio_seconds=args.audio_seconds)

    results = {}
    for name in args.models.split(","):
        try:
            results[name] = measure(name, args, device, shard_args)
        except Exception as err:  # one model failing still reports the others
            print(f"{name}: failed: {type(err).__name__}: {err}", flush=True)
            results[name] = {"error": f"{type(err).__name__}: {err}"}

    if args.ray:
        results.update(ray_parts(args, device))
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(json.dumps({
        "bench": "gpu",
        "calibration": calibration(), "device": gpu or "cpu", "torch": torch.__version__,
        "cuda": torch.version.cuda, "steps": args.steps, "frame_size": args.frame_size,
        "text_length": args.text_length, "audio_seconds": args.audio_seconds,
        "half_rtx3060_budget_gib": HALF_RTX3060_GIB, "cuda_context_gib_assumed": CUDA_CONTEXT_GIB,
        "models": results,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
    }))


if __name__ == "__main__":
    main()
