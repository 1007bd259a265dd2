"""Ray Data preprocessing versus a plain single-process loop, on the same video+audio corpus.

    python bench/preprocess.py [--config configs/bench_preprocess.yaml] [--scaling 1,2,4] [--set KEY=VALUE ...]

Both sides run the same code: the MELD scan, ``EmotionRowDecoder`` (OpenCV frames, PyAV/
soundfile audio resampled by soxr, tokenizer) and a split-partitioned Parquet write. The
loop calls the decoder batch by batch in this process; Ray runs the full ``preprocess``
job (decoder actor pool streaming into the Parquet writer, quarantine actor, manifest).
Ray's start-up is timed separately: the
throughput compares the work with a cluster already up, as a user's cluster would be.
The same loop in two plain processes (half the corpus each) measures what two cores of
the machine give at best, so Ray's ratio can be read against that ceiling.
Scaling (``--scaling 1,2,4``): the Ray side again on the corpus 1, 2 and 4 times over
(each copy under new dialogue ids, its files hard-linked: the same clips, more of them),
each size in a fresh driver process: its wall time, and the driver's peak anonymous
memory (heap and private mappings), which must not grow with the corpus.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
os.chdir(REPO_ROOT)
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

# Only what the plain loop needs is imported here: the two-process ceiling's children
# re-import this module, and must not pay for Ray or torch (main() imports those).
from deepfusion.config import load_config  # noqa: E402
from deepfusion.preprocess.emotion import speaker_vocabulary  # noqa: E402
from deepfusion.preprocess.emotion_rows import EmotionRowDecoder  # noqa: E402
from deepfusion.preprocess.quarantine import QuarantineLog  # noqa: E402
from deepfusion.sources.meld import scan_meld  # noqa: E402


def plain_loop(dataset, batch_size: int, out_dir: Path, part: int = 0, parts: int = 1) -> int:
    """What one would write without Ray: scan, decode batch by batch, write Parquet.

    ``part``/``parts`` take every ``parts``-th record, for the two-process ceiling.
    """
    all_records, _ = scan_meld(dataset)
    records = all_records[part::parts]
    decoder = EmotionRowDecoder(dataset.video, dataset.audio, dataset.text, speaker_vocabulary(all_records),
                                quarantine=QuarantineLog())
    tables = []
    for start in range(0, len(records), batch_size):
        tables.append(decoder(pd.DataFrame(records[start:start + batch_size])))
    rows = pa.concat_tables(tables)
    pads.write_dataset(rows, out_dir, format="parquet", partitioning=["split"],
                       partitioning_flavor="hive")
    return rows.num_rows


def two_process_ceiling(dataset, batch_size: int, out_dir: Path) -> tuple[int, float]:
    """The same loop in two plain processes, half the corpus each: no Ray, no coordination.

    What two cores of this machine can give at best; Ray's ratio is judged against it.
    """
    started = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(plain_loop, dataset, batch_size, out_dir / f"part{i}", i, 2) for i in range(2)]
        clips = sum(f.result() for f in futures)
    return clips, time.perf_counter() - started


MEDIA_NAME = re.compile(r"dia(\d+)_utt(\d+)\.(\w+)$")


def scaled_corpus(root: Path, times: int, out: Path) -> Path:
    """``root``'s MELD layout ``times`` over in ``out``: copy c of dialogue d is dialogue
    d + c x (the split's largest id + 1), its files hard links to the originals. Kept
    once built (a stamp file)."""
    stamp = out / ".complete"
    if stamp.exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    for table in sorted(root.glob("*_sent_emo.csv")):
        split = table.name.removesuffix("_sent_emo.csv")
        rows = pd.read_csv(table)
        offset = int(rows["Dialogue_ID"].max()) + 1
        copies = [rows.assign(Dialogue_ID=rows["Dialogue_ID"] + c * offset) for c in range(times)]
        scaled = pd.concat(copies, ignore_index=True)
        scaled["Sr No."] = range(1, len(scaled) + 1)
        (out / split).mkdir(parents=True)
        scaled.to_csv(out / table.name, index=False)
        for media in (root / split).iterdir():
            match = MEDIA_NAME.match(media.name)
            if match is None:
                continue
            dialogue, utterance, ext = int(match[1]), match[2], match[3]
            for c in range(times):
                os.link(media, out / split / f"dia{dialogue + c * offset}_utt{utterance}.{ext}")
    stamp.touch()
    return out


class AnonymousMemoryPeak:
    """The highest anonymous resident memory (``RssAnon``: heap and private mappings, not
    Ray's shared object store that the driver maps) of this process, sampled every 0.1 s."""

    def __init__(self):
        import threading

        self.peak_kb, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            self._stop.wait(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *_):
        self._stop.set()
        self._thread.join()


def scaling_side(args, times: int) -> None:
    """One size of the scaling rows, in this (fresh) process: the corpus ``times`` over,
    Ray Data's preprocess on it; prints clips, seconds and the driver's peak memory."""
    import ray

    from deepfusion.preprocess.datasets import preprocess

    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("preprocess", args.config)
    [dataset] = [d for d in cfg.datasets if d.kind == "meld"]
    root = scaled_corpus(Path(dataset.root), times, Path(experiment.demo_data.out).with_name(f"data_x{times}") / "meld")
    warm_page_cache(root)
    scratch = Path(tempfile.mkdtemp(prefix="bench_preprocess_scaling_"))
    try:
        started = time.perf_counter()
        ray.init(address="local", num_cpus=experiment.ray.num_cpus, include_dashboard=False)
        ray_start_s = time.perf_counter() - started
        scaled = cfg.model_copy(update={"output_dir": scratch, "datasets": [dataset.model_copy(update={"root": root})]})
        started = time.perf_counter()
        with AnonymousMemoryPeak() as memory:
            [result] = preprocess(scaled, force=True)
        ray_s = time.perf_counter() - started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        ray.shutdown()
    # ru_maxrss counts the pages of Ray's object store the driver has mapped: the same at
    # every size, and not the driver's own memory. The anonymous peak is.
    print(json.dumps({"times": times, "clips": sum(result.manifest["totals"].values()), "ray_s": round(ray_s, 2),
                      "ray_start_s": round(ray_start_s, 2), "driver_peak_anon_mb": round(memory.peak_kb / 1024, 1),
                      "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def scaling_rows(args, sizes: list[int]) -> list[dict]:
    rows = []
    for times in sizes:
        command = [sys.executable, __file__, "--scaling-side", str(times), "--config", args.config]
        for override in args.overrides:
            command += ["--set", override]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"scaling side x{times} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"scaling x{times}: {row['clips']} clips in {row['ray_s']} s, driver peak anonymous memory "
              f"{row['driver_peak_anon_mb']} MB (peak RSS with the mapped object store {row['driver_peak_rss_mb']} MB)",
              flush=True)
        rows.append(row)
    return rows


def warm_page_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


def main() -> None:
    import ray

    from deepfusion.demo import make_demo_data
    from deepfusion.preprocess.datasets import preprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/bench_preprocess.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--scaling", default="1,2,4", help="corpus multiples for the scaling rows ('' for none)")
    parser.add_argument("--scaling-side", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scaling_side:
        return scaling_side(args, args.scaling_side)
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("preprocess", args.config)
    [dataset] = [d for d in cfg.datasets if d.kind == "meld"]

    generated_at = time.perf_counter()
    written, stamp = make_demo_data(experiment.require("demo_data", args.config))
    print(f"corpus: {sum(stamp['meld_rows'].values())} SYNTHETIC clips "
          f"({'generated in %.0f s' % (time.perf_counter() - generated_at) if written else 'cached'})")
    warm_page_cache(Path(dataset.root))

    scratch = Path(tempfile.mkdtemp(prefix="bench_preprocess_"))
    try:
        started = time.perf_counter()
        loop_clips = plain_loop(dataset, cfg.data.batch_size, scratch / "loop")
        loop_s = time.perf_counter() - started
        print(f"plain loop : {loop_clips} clips in {loop_s:.1f} s")
        pair_clips, pair_s = two_process_ceiling(dataset, cfg.data.batch_size, scratch / "pair")
        print(f"2 processes: {pair_clips} clips in {pair_s:.1f} s (the loop, half the corpus each: "
              f"this machine's ceiling)")

        started = time.perf_counter()
        ray.init(address="local", num_cpus=experiment.ray.num_cpus, include_dashboard=False)
        ray_start_s = time.perf_counter() - started
        started = time.perf_counter()
        [result] = preprocess(cfg.model_copy(update={"output_dir": scratch / "ray"}), force=True)
        ray_s = time.perf_counter() - started
        ray_clips = sum(result.manifest["totals"].values())
        print(f"Ray Data   : {ray_clips} clips in {ray_s:.1f} s (+ {ray_start_s:.1f} s Ray start)")
        assert ray_clips == loop_clips, "both sides must produce the same rows"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        ray.shutdown()

    figures = {
        "bench": "preprocess", "calibration": calibration(),
        "clips": ray_clips,
        "ray_clips_per_s": round(ray_clips / ray_s, 2),
        "loop_clips_per_s": round(loop_clips / loop_s, 2),
        "ratio": round(loop_s / ray_s, 3),
        "ratio_with_ray_start": round(loop_s / (ray_s + ray_start_s), 3),
        "two_process_ceiling_ratio": round(loop_s / pair_s, 3),
        "ray_share_of_ceiling": round(pair_s / ray_s, 3),
        "ray_start_s": round(ray_start_s, 2),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
    }
    sizes = [int(s) for s in args.scaling.split(",") if s.strip()]
    if sizes:
        rows = scaling_rows(args, sizes)
        figures["scaling"] = {f"x{r['times']}": {k: r[k] for k in ("clips", "ray_s", "driver_peak_anon_mb")}
                              for r in rows}
        first = rows[0]
        figures["scaling_time_ratios"] = {f"x{r['times']}": round(r["ray_s"] / first["ray_s"], 2) for r in rows[1:]}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
