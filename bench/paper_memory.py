"""Peak memory of one training step of each paper-preset model, on the CPU.

    python bench/paper_memory.py [--models textile,mimamo,multimodal_lstm] [--steps 2]

What one Ray Train worker of ``configs/paper`` holds: the model at the paper preset (random
weights: the same size as the pretrained ones), AdamW state, and the activations of a
training step at the config's micro-batch (its batch over 2 workers and its
``grad_accumulation``: textile 16 images of 224 px, MIMAMO 4 clips of 8 x 224 px frames,
Multimodal LSTM 8 utterances of 6 s audio and 128 tokens), fp32, through
``training.epoch.run_epoch``. Wav2Vec2's CNN feature encoder is frozen, as the paper preset
freezes it once the pretrained weights are loaded. Each model runs in its own process; the figure is that
process's peak resident memory (``ru_maxrss``) less its resident memory before the model
was built (Python, torch, transformers). A GPU holds roughly the same tensors (without
AMP); ``bench/gpu.py`` measures the card itself. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "platform"))
GIB = 1024 ** 3


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def one_model(name: str, steps: int) -> dict:
    import torch
    from gpu import SyntheticShard, as_pretrained, paper_train_config

    from deepfusion.config import OptimConfig
    from deepfusion.models import build_model
    from deepfusion.training.epoch import run_epoch
    from deepfusion.training.optimization import build_optimizer

    torch.set_num_threads(os.cpu_count())
    before = rss_bytes()
    train_cfg = paper_train_config(name)
    model_cfg = train_cfg.model
    model = as_pretrained(build_model(model_cfg))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = build_optimizer(OptimConfig(optimizer="adamw", lr=1e-4), model)
    batch = train_cfg.micro_batch_size  # what one forward pass of one worker holds
    shard = SyntheticShard(name, batch * steps, frame_size=224, num_frames=8, text_length=128, audio_seconds=6.0)
    started = time.perf_counter()
    run_epoch(model, shard, model_cfg=model_cfg, loss_fn=torch.nn.CrossEntropyLoss(), device=torch.device("cpu"),
              amp=False, num_classes=model_cfg.num_classes, batch_size=batch, optimizer=optimizer,
              scaler=torch.amp.GradScaler("cuda", enabled=False), grad_clip=1.0)
    step_s = (time.perf_counter() - started) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"micro_batch": batch, "grad_accumulation": train_cfg.grad_accumulation,
            "parameters_m": round(params / 1e6, 1), "trainable_m": round(trainable / 1e6, 1),
            "peak_gib": round((peak - before) / GIB, 2), "process_peak_gib": round(peak / GIB, 2),
            "step_s_cpu": round(step_s, 1),
            # weights + gradients + two AdamW moments, fp32: the floor of any training step
            "weights_grads_adam_gib": round((params * 4 + trainable * 12) / GIB, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="textile,mimamo,multimodal_lstm")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_model(args.one, args.steps)))
        return
    results = {}
    for name in args.models.split(","):
        run = subprocess.run([sys.executable, __file__, "--one", name, "--steps", str(args.steps)],
                             capture_output=True, text=True, cwd=REPO_ROOT / "bench")
        if run.returncode:
            results[name] = {"error": run.stderr.strip().splitlines()[-1] if run.stderr.strip() else run.returncode}
        else:
            results[name] = json.loads(run.stdout.strip().splitlines()[-1])
            results[name]["fits_half_rtx3060_fp32"] = results[name]["peak_gib"] + 0.5 <= 6.0
        print(f"{name:16s} {json.dumps(results[name])}", flush=True)
    print(json.dumps({"bench": "paper_memory",
        "calibration": calibration(), "device": "cpu", "precision": "fp32", "models": results,
                      "half_rtx3060_gib": 6.0, "cuda_context_gib_assumed": 0.5,
                      "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}"}))


if __name__ == "__main__":
    main()
