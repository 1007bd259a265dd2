"""Ray Data preprocessing versus a plain single-process loop, on the same video+audio corpus.

    python bench/preprocess.py [--config configs/bench_preprocess.yaml] [--set KEY=VALUE ...]

Both sides run the same code: the MELD scan, ``EmotionRowDecoder`` (OpenCV frames, PyAV/
soundfile audio resampled by soxr, tokenizer) and a split-partitioned Parquet write. The
loop calls the decoder batch by batch in this process; Ray runs the full ``preprocess``
job (decoder actor pool streaming into the Parquet writer, quarantine actor, manifest).
Ray's start-up is timed separately: the
throughput compares the work with a cluster already up, as a user's cluster would be.
The same loop in two plain processes (half the corpus each) measures what two cores of
the machine give at best, so Ray's ratio can be read against that ceiling.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

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
    args = parser.parse_args()
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
        "bench": "preprocess",
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
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
