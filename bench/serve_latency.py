"""Serve latency and throughput over real HTTP at concurrency 1, 8 and 32, beside the compute ceiling.

    python bench/serve_latency.py [--config configs/serve.yaml] [--requests 48] [--set KEY=VALUE ...]

Deploys the application of ``configs/serve.yaml`` on a local Ray, then POSTs demo MELD
utterances (mp4 + transcript + speaker) to ``/v1/emotion``: p50/p95/p99 latency and
throughput per concurrency, and the per-stage breakdown the responses report beside the
methodology's budget. First, in this process and before Ray starts, the same utterances go
through ``EmotionRecognizer`` (decode -> MIMAMO -> LSTM -> fusion, no Ray, no HTTP): one
at a time (the Serve overhead at concurrency 1 is measured against it) and in batches of
1-16 (decoding each request, then both backbones and the fusion on the batch, torch on
every core): the best of these is ``ceiling_rps``, what this machine computes per second
with nothing else to do. A client answered 503 (over capacity) waits its Retry-After and
sends the request again; only answered requests count in the latencies and throughput
(each level sends at least 8 requests per client, so that this is the steady state).
Where the CPU goes: around each level, every process's CPU time on this machine (from
``/proc``) is read and grouped (each Serve deployment's replicas, the HTTP proxy, Serve's
controller, Ray's own daemons, this bench's client threads, anything else), then divided
by the answered requests; beside it, the ceiling's CPU per request. Their ratio bounds what
share of the ceiling the server can reach on these cores.
Ray starts in Serve's throughput-optimized mode, as every node deepfusion starts
(``deepfusion.ray_runtime.SERVE_ENVIRONMENT``). The last line is one JSON object.

Needs the checkpoints the config names (jobs.train for mimamo and multimodal_lstm,
jobs.tune_fusion) and the demo corpus (make demo).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import requests
from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
os.chdir(REPO_ROOT)

from deepfusion.config import load_config  # noqa: E402

# The methodology's per-stage budget on an RTX 3060 (ms).
SEED_BUDGET_MS = {"preprocess": "<50", "video": "~45", "audio_text": "~35", "fusion": "~5", "total": "~87"}


def utterances(meld_root: Path, split: str = "test") -> list[dict]:
    """Demo MELD utterances that have an mp4: the request bodies."""
    rows = pd.read_csv(meld_root / f"{split}_sent_emo.csv")
    media = meld_root / {"test": "test", "val": "dev", "train": "train"}[split]
    out = []
    for row in rows.itertuples():
        clip = media / f"dia{row.Dialogue_ID}_utt{row.Utterance_ID}.mp4"
        if clip.is_file():
            out.append({"video": clip, "text": row.Utterance, "speaker": row.Speaker})
    return out


def post(session: requests.Session, url: str, sample: dict, refusals: list | None = None) -> tuple[float, dict]:
    """One answered request: its latency (ms) and answer. A 503 is noted in ``refusals``
    (its latency and Retry-After) and the request is sent again after the Retry-After."""
    while True:
        started = time.perf_counter()
        with open(sample["video"], "rb") as video:
            response = session.post(url, files={"video": ("clip.mp4", video, "video/mp4")},
                                    data={"text": sample["text"], "speaker": sample["speaker"]}, timeout=120)
        elapsed = 1000 * (time.perf_counter() - started)
        if response.status_code == 503 and refusals is not None:
            retry_after = float(response.headers.get("retry-after", 1))
            refusals.append((elapsed, retry_after))
            time.sleep(retry_after)
            continue
        response.raise_for_status()
        return elapsed, response.json()


def ceiling(pipeline, requests_: list[dict], total: int, sizes=(1, 2, 4, 8, 16)) -> dict:
    """Requests per second of the in-process pipeline on batches of each size: every
    request of a batch decoded (the ingress's work), then both backbones and the fusion
    on the whole batch (``predict_batch``). No Ray, no HTTP; torch on every core."""
    from deepfusion.inference.emotion import EmotionRequest

    rates, cpu_ms = {}, {}
    for size in sizes:
        started, cpu_started = time.perf_counter(), time.process_time()
        for first in range(0, total, size):
            rows = [pipeline.decoder.row(EmotionRequest(video_path=r["video"], text=r["text"], speaker=r["speaker"]))
                    for r in (requests_[i % len(requests_)] for i in range(first, min(first + size, total)))]
            pipeline.predict_batch({column: [row[column] for row in rows] for column in rows[0]})
        rates[size] = round(total / (time.perf_counter() - started), 2)
        cpu_ms[size] = round(1000 * (time.process_time() - cpu_started) / total, 1)  # every thread of this process
    return rates, cpu_ms


def process_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process on this machine: pid -> (its group, CPU seconds used so far, user + system)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        comm, fields = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
        found[int(entry.name)] = (_process_group(int(entry.name), comm, cmdline.strip()),
                                  (int(fields[11]) + int(fields[12])) / tick)
    return found


def _process_group(pid: int, comm: str, cmdline: str) -> str:
    """Ray names its workers by their actor (``ray::ServeReplica:<app>:<deployment>``, then
    ``.<method>`` while one runs)."""
    if pid == os.getpid():
        return "client"
    if cmdline.startswith("ray::ServeReplica:"):
        return cmdline.split()[0].split(":")[-1].split(".")[0]
    if cmdline.startswith("ray::ProxyActor"):
        return "proxy"
    if cmdline.startswith("ray::ServeController"):
        return "controller"
    if (comm in ("raylet", "gcs_server") or comm.startswith("ray-dashboard") or "/ray/" in cmdline
            or cmdline.startswith(("ray::DashboardAgent", "ray::RuntimeEnvAgent"))):
        return "Ray daemons"
    if cmdline.startswith("ray::"):
        return "other Ray workers"
    return "outside Ray"


def cpu_ms_per_request(before: dict, after: dict, answered: int) -> dict:
    """CPU per answered request, by group, between two ``process_cpu_seconds`` readings
    (a process started meanwhile counts from zero; one that ended is missing from both)."""
    groups: dict[str, float] = {}
    for pid, (group, seconds) in after.items():
        groups[group] = groups.get(group, 0.0) + seconds - before.get(pid, (group, 0.0))[1]
    per_request = {group: round(1000 * seconds / answered, 1) for group, seconds in sorted(groups.items())}
    return per_request | {"total": round(1000 * sum(groups.values()) / answered, 1)}


def percentiles(values: list[float]) -> dict:
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)}


def run_concurrency(url: str, samples: list[dict], concurrency: int, total: int) -> dict:
    sessions = [requests.Session() for _ in range(concurrency)]
    jobs = [(sessions[i % concurrency], samples[i % len(samples)]) for i in range(total)]
    refusals: list = []
    processes_before = process_cpu_seconds()
    started, cpu_started = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda job: post(job[0], url, job[1], refusals), jobs))
    wall = time.perf_counter() - started
    cpu_by_group = cpu_ms_per_request(processes_before, process_cpu_seconds(), total)
    # The load generator shares the machine's cores with the server: its own CPU per request.
    client_cpu_ms = 1000 * (time.process_time() - cpu_started) / total
    latencies = [r[0] for r in results]
    stages = {k: round(float(np.median([r[1]["latency_ms"][k] for r in results])), 1)
              for k in ("preprocess", "video", "audio_text", "fusion", "total")}
    refused = {"refused": len(refusals)}
    if refusals:
        refused |= {"refused_p50_ms": round(float(np.median([r[0] for r in refusals])), 1),
                    "retry_after_s": max(r[1] for r in refusals)}
    return {"concurrency": concurrency, "requests": total, **percentiles(latencies),
            "rps": round(total / wall, 2), "stages_p50_ms": stages, "client_cpu_ms": round(client_cpu_ms, 1),
            "cpu_ms_per_request": cpu_by_group,
            # how busy the machine's cores were over the level (1: every core all the time)
            "cores_busy": round(cpu_by_group["total"] * total / 1000 / wall / os.cpu_count(), 2), **refused}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/serve.yaml")
    parser.add_argument("--meld", default="work/demo/data/meld", help="a MELD-layout folder with mp4s")
    parser.add_argument("--requests", type=int, default=48,
                        help="requests per concurrency level (at least 8 per client)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("serve", args.config)
    samples = utterances(Path(args.meld))
    if not samples:
        sys.exit(f"no mp4 utterances under {args.meld}; run `make demo` first")

    # The baseline first, on a quiet machine: no Ray yet, nothing shutting down.
    from deepfusion.inference.emotion import EmotionRecognizer

    pipeline = EmotionRecognizer(video_checkpoint=cfg.video_checkpoint, audio_text_checkpoint=cfg.audio_text_checkpoint,
                                 fusion_checkpoint=cfg.fusion_checkpoint)
    requests_ = [{"video": str(s["video"]), "text": s["text"], "speaker": s["speaker"]} for s in samples]
    for request in requests_[:8]:
        pipeline.predict(**request)
    inprocess = []
    cpu_started = time.process_time()
    for i in range(args.requests):
        started = time.perf_counter()
        pipeline.predict(**requests_[i % len(requests_)])
        inprocess.append(1000 * (time.perf_counter() - started))
    in_cpu_ms = 1000 * (time.process_time() - cpu_started) / args.requests
    in_p50 = float(np.percentile(inprocess, 50))
    print(f"in-process pipeline: p50 {in_p50:.1f} ms, {in_cpu_ms:.1f} ms of CPU a request "
          f"(same utterances, one process, sequential)", flush=True)
    ceilings, ceiling_cpu = ceiling(pipeline, requests_, args.requests)
    ceiling_batch, ceiling_rps = max(ceilings.items(), key=lambda item: item[1])
    print(f"compute ceiling: {ceiling_rps} req/s (batches of {ceiling_batch}; by batch size {ceilings}); "
          f"{ceiling_cpu[ceiling_batch]} ms of CPU a request", flush=True)
    del pipeline

    from deepfusion.ray_runtime import connect, use_serve_environment

    use_serve_environment()  # Serve's throughput mode, before ray.serve is imported
    from ray import serve

    from deepfusion.serving.app import build_app

    connect(experiment.ray)
    serve.start(http_options={"host": "127.0.0.1", "port": cfg.http_port})
    serve.run(build_app(cfg), name="deepfusion", route_prefix="/")
    url = f"http://127.0.0.1:{cfg.http_port}/v1/emotion"
    session = requests.Session()
    for sample in samples[:8]:  # warm-up: first calls load kernels, fill caches
        post(session, url, sample)

    # At least 8 requests per client: a refused client sits out its Retry-After, which in a
    # level of 2 requests per client would be a third of the wall time, not its steady state.
    levels = [run_concurrency(url, samples, c, max(args.requests, 8 * c)) for c in (1, 8, 32)]
    for level in levels:
        print(f"concurrency {level['concurrency']:>2}: p50 {level['p50_ms']} ms, p95 {level['p95_ms']} ms, "
              f"p99 {level['p99_ms']} ms, {level['rps']} req/s ({level['rps'] / ceiling_rps:.2f} of the ceiling), "
              f"{level['refused']} refused with 503; stages p50 {level['stages_p50_ms']}; "
              f"client CPU {level['client_cpu_ms']} ms/request", flush=True)
        print(f"    CPU ms per answered request, by process: {level['cpu_ms_per_request']}; "
              f"cores busy {level['cores_busy']}", flush=True)
    print(f"seed budget (RTX 3060): {SEED_BUDGET_MS}", flush=True)
    serve.shutdown()

    import ray

    ray.shutdown()
    c1 = levels[0]
    print(json.dumps({
        "bench": "serve_latency",
        "calibration": calibration(), "p50_ms": c1["p50_ms"], "p95_ms": c1["p95_ms"], "p99_ms": c1["p99_ms"],
        "inprocess_p50_ms": round(in_p50, 1), "overhead_ms": round(c1["p50_ms"] - in_p50, 1),
        "rps_c1": c1["rps"], "p50_ms_c8": levels[1]["p50_ms"], "p99_ms_c8": levels[1]["p99_ms"],
        "rps_c8": levels[1]["rps"], "p50_ms_c32": levels[2]["p50_ms"], "p99_ms_c32": levels[2]["p99_ms"],
        "rps_c32": levels[2]["rps"], "ceiling_rps": ceiling_rps, "ceiling_batch": ceiling_batch,
        "ceiling_rps_by_batch": ceilings, "rps_c8_over_ceiling": round(levels[1]["rps"] / ceiling_rps, 3),
        "rps_c32_over_ceiling": round(levels[2]["rps"] / ceiling_rps, 3),
        "refused_c8": levels[1]["refused"], "refused_c32": levels[2]["refused"],
        "refused_p50_ms_c32": levels[2].get("refused_p50_ms"), "stages_p50_ms_c1": c1["stages_p50_ms"],
        "client_cpu_ms_c8": levels[1]["client_cpu_ms"], "client_cpu_ms_c32": levels[2]["client_cpu_ms"],
        "inprocess_cpu_ms_per_request": round(in_cpu_ms, 1), "cpu_ms_per_request_c1": c1["cpu_ms_per_request"],
        "ceiling_cpu_ms_per_request": ceiling_cpu[ceiling_batch],
        "cpu_ms_per_request_c8": levels[1]["cpu_ms_per_request"],
        "cpu_ms_per_request_c32": levels[2]["cpu_ms_per_request"],
        "cores_busy_c8": levels[1]["cores_busy"], "cores_busy_c32": levels[2]["cores_busy"],
        "admission_max_in_flight": cfg.admission.max_in_flight,
        "serve_throughput_optimized": os.environ.get("RAY_SERVE_THROUGHPUT_OPTIMIZED") == "1",
        "preset": "cpu-small",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, python {sys.version.split()[0]}",
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
