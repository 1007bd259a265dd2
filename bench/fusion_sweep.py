"""50 Enhanced Late Fusion trials through Ray Tune + OptunaSearch: as configured vs Tune's defaults.

    python bench/fusion_sweep.py [--config configs/fusion.yaml] [--trials 50] [--set KEY=VALUE ...]

Both sides run the same search (same space, seed, cached logits, ``fit_fusion``) in a
fresh process that starts its own Ray node, so each wall time includes Python start-up,
Ray start and shutdown. "configured": the config's ``fusion.search`` (trial actors
reused, fractional CPUs). "default": Tune's default trial execution, one fresh worker
process per trial (``reuse_actors=False``) at Tune's default 1 CPU per trial. The logit
cache is built first, untimed, and both sides reuse it. The last line is one JSON object.

Needs the two backbone checkpoints the config names (``python -m jobs.train`` with
configs/mimamo.yaml and configs/multimodal_lstm.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def side(args) -> None:
    """One timed run, in its own process; prints its figures as JSON."""
    started = time.perf_counter()
    from deepfusion.config import load_config
    from deepfusion.fusion.fit_data import fit_splits
    from deepfusion.fusion.logit_cache import open_or_build
    from deepfusion.fusion.search import run_search
    from deepfusion.ray_runtime import connect

    experiment = load_config(args.config, args.overrides)
    ray_started = time.perf_counter()
    connect(experiment.ray)
    ray_start_s = time.perf_counter() - ray_started
    cfg = experiment.fusion
    cache, built = open_or_build(cfg)
    search_started = time.perf_counter()
    outcome = run_search(cfg, cache, fit_splits(cfg, cache.load_all()), fresh=True)
    search_s = time.perf_counter() - search_started
    import ray

    ray.shutdown()
    print(json.dumps({"trials": outcome.num_trials, "errored": outcome.num_errored, "cache_built": built,
                      "in_process_wall_s": round(time.perf_counter() - started, 2),
                      "ray_start_s": round(ray_start_s, 2), "search_s": round(search_s, 2),
                      "best_val_weighted_f1": outcome.best_metrics["best_val_weighted_f1"]}))


def run_side(name: str, args, overrides: list[str]) -> dict:
    command = [sys.executable, __file__, "--side", "--config", args.config]
    for override in args.overrides + overrides:
        command += ["--set", override]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{name} side failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name}: {figures['trials']} trials in {wall_s:.1f} s (process), search {figures['search_s']} s, "
          f"Ray start {figures['ray_start_s']} s, best val weighted F1 {figures['best_val_weighted_f1']:.4f}",
          flush=True)
    return figures | {"wall_s": round(wall_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fusion.yaml")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return 0

    storage = tempfile.mkdtemp(prefix="bench_fusion_")
    common = [f"fusion.search.num_samples={args.trials}", f"fusion.search.storage_path={storage}"]
    args.overrides += common
    run_side("cache", args, ["fusion.search.num_samples=1", "fusion.search.name=warmup"])  # untimed
    configured = run_side("configured", args, ["fusion.search.name=configured"])
    default = run_side("default", args, ["fusion.search.name=default", "fusion.search.reuse_actors=false",
                                         "fusion.search.cpus_per_trial=1", "fusion.search.max_concurrent_trials=2"])
    print(json.dumps({
        "bench": "fusion_sweep", "trials": configured["trials"],
        "wall_s": configured["wall_s"], "default_wall_s": default["wall_s"],
        "ratio": round(default["wall_s"] / configured["wall_s"], 2),
        "best_val_weighted_f1": round(configured["best_val_weighted_f1"], 4),
        "default_best_val_weighted_f1": round(default["best_val_weighted_f1"], 4),
        "search_s": configured["search_s"], "default_search_s": default["search_s"],
        "ray_start_s": configured["ray_start_s"], "errored": configured["errored"] + default["errored"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
