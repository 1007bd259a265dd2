"""Enhanced Late Fusion sweeps through Ray Tune + OptunaSearch: 50 trials, 4x as many, and Tune's defaults.

    python bench/fusion_sweep.py [--config configs/fusion.yaml] [--trials 50] [--scale 4]
                                 [--with-default] [--set KEY=VALUE ...]

Every side runs the same search (same space, seed, cached logits, ``fit_fusion``) in a
fresh process that starts its own Ray node, so each wall time includes Python start-up,
Ray start and shutdown. "configured": the config's ``fusion.search`` (trial actors
reused, fractional CPUs), with ``--trials`` and with ``--scale`` times as many trials:
how the wall time grows with the study. After each configured side, TPE's cost of one
suggestion is timed at several history sizes (the finished study replayed into an
in-memory study with the searcher's sampler settings). "default" (``--with-default``):
Tune's default trial execution, one fresh worker process per trial
(``reuse_actors=False``) at Tune's default 1 CPU per trial. The logit cache is built
first, untimed, and every side reuses it. The last line is one JSON object.

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

from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

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
    ask_ms = tpe_suggestion_ms(cfg, outcome.optuna_storage)
    print(json.dumps({"trials": outcome.num_trials, "tpe_ask_ms": ask_ms, "errored": outcome.num_errored,
                      "cache_built": built,
                      "in_process_wall_s": round(time.perf_counter() - started, 2),
                      "ray_start_s": round(ray_start_s, 2), "search_s": round(search_s, 2),
                      "best_val_weighted_f1": outcome.best_metrics["best_val_weighted_f1"]}))


def tpe_suggestion_ms(cfg, storage: str) -> dict:
    """Milliseconds for one TPE suggestion with n finished trials in the history, for
    several n up to the study's size: the search's trials replayed into an in-memory study
    (the searcher's sampler settings), then the median of 5 asks."""
    import statistics

    import optuna

    from deepfusion.fusion.study import load_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    finished = load_study(cfg.search.name, storage).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    sizes = sorted({n for n in (10, 25, 50, 100, 200, 400, 800) if n <= len(finished)} | {len(finished)})
    out = {}
    for n in sizes:
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.search.seed))
        study.add_trials(finished[:n])
        times = []
        for _ in range(5):
            started = time.perf_counter()
            trial = study.ask(fixed_distributions=finished[0].distributions)
            times.append(1000 * (time.perf_counter() - started))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)  # not part of the next ask's history
        out[str(n)] = round(statistics.median(times), 2)
    return out


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
          f"Ray start {figures['ray_start_s']} s, best val weighted F1 {figures['best_val_weighted_f1']:.4f}, "
          f"TPE ms per suggestion by history size {figures['tpe_ask_ms']}", flush=True)
    return figures | {"wall_s": round(wall_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/fusion.yaml")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--scale", type=int, default=4, help="the larger sweep has this many times --trials")
    parser.add_argument("--with-default", action="store_true", help="also run Tune's default trial execution")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side(args)
        return 0

    storage = tempfile.mkdtemp(prefix="bench_fusion_")
    args.overrides += [f"fusion.search.storage_path={storage}"]
    run_side("cache", args, ["fusion.search.num_samples=1", "fusion.search.name=warmup"])  # untimed
    large_trials = args.scale * args.trials
    configured = run_side("configured", args, [f"fusion.search.num_samples={args.trials}",
                                                "fusion.search.name=configured"])
    large = run_side(f"configured x{args.scale}", args, [f"fusion.search.num_samples={large_trials}",
                                                           "fusion.search.name=large"])
    default = None
    if args.with_default:
        default = run_side("default", args, [f"fusion.search.num_samples={args.trials}", "fusion.search.name=default",
                                             "fusion.search.reuse_actors=false", "fusion.search.cpus_per_trial=1",
                                             "fusion.search.max_concurrent_trials=2"])
    result = {
        "bench": "fusion_sweep",
        "calibration": calibration(), "trials": configured["trials"], "wall_s": configured["wall_s"],
        "search_s": configured["search_s"], "ray_start_s": configured["ray_start_s"],
        "large_trials": large["trials"], "large_wall_s": large["wall_s"], "large_search_s": large["search_s"],
        "large_over_base_wall": round(large["wall_s"] / configured["wall_s"], 2),
        "tpe_ask_ms": large["tpe_ask_ms"],
        "best_val_weighted_f1": round(configured["best_val_weighted_f1"], 4),
        "large_best_val_weighted_f1": round(large["best_val_weighted_f1"], 4),
        "errored": configured["errored"] + large["errored"] + (default["errored"] if default else 0),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
    }
    if default is not None:
        result |= {"default_wall_s": default["wall_s"], "default_search_s": default["search_s"],
                   "default_ratio": round(default["wall_s"] / configured["wall_s"], 2),
                   "default_best_val_weighted_f1": round(default["best_val_weighted_f1"], 4)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
