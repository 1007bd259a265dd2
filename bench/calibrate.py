"""The machine's yardstick on the day: a fixed fp32 matmul's GFLOPS on the configured torch
threads and a fixed pure-Python loop's time. Machines of one kind differ by about 1.7x from
day to day, so every bench prints these beside its own figures (its JSON line's
``calibration``), and docs/benchmarks.md records them with each result.

    python bench/calibrate.py
"""

from __future__ import annotations

import json
import os
import platform
import time

MATMUL_N = 2048  # a 2048 x 2048 fp32 matmul: 17.2 GFLOP
MATMUL_REPEATS = 8
LOOP_N = 3_000_000  # a fixed pure-Python loop (the interpreter's speed, one core)
TRIES = 3


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def matmul_gflops(threads: int | None = None) -> float:
    """Best of ``TRIES`` rounds of ``MATMUL_REPEATS`` matmuls, in GFLOPS."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, generator=generator)
    b = torch.randn(MATMUL_N, MATMUL_N, generator=generator)
    torch.mm(a, b)  # warm-up: thread pool and kernel selection
    best = float("inf")
    for _ in range(TRIES):
        started = time.perf_counter()
        for _ in range(MATMUL_REPEATS):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - started) / MATMUL_REPEATS)
    return 2 * MATMUL_N**3 / best / 1e9


def python_loop_ms() -> float:
    """Best of ``TRIES`` runs of a fixed integer loop, in milliseconds."""
    best = float("inf")
    for _ in range(TRIES):
        started = time.perf_counter()
        total = 0
        for i in range(LOOP_N):
            total += i % 7
        best = min(best, time.perf_counter() - started)
    assert total == sum(i % 7 for i in range(LOOP_N))  # the loop did its work
    return best * 1000


def calibration() -> dict:
    """What every bench's JSON line carries as ``calibration``."""
    import torch

    threads = torch.get_num_threads()
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": threads,
            "matmul_fp32_2048_gflops": round(matmul_gflops(threads), 1),
            "python_loop_ms": round(python_loop_ms(), 1)}


def main() -> None:
    print(json.dumps({"bench": "calibrate", **calibration()}))


if __name__ == "__main__":
    main()
