"""Batch prediction throughput: ``jobs.predict`` (Ray Data) beside a one-clip-at-a-time loop.

    python bench/batch_predict.py [--config configs/predict.yaml] [--checkpoint work/fusion/best]
                                  [--meld work/demo/data/meld] [--repeat 5] [--set KEY=VALUE ...]

The clips are the demo MELD corpus' utterances that have an mp4 (all splits), written as
a manifest (video, transcript, speaker), each listed ``--repeat`` times under its own
sample id (every listing is decoded again: a batch of a size batch jobs have). Both
sides are timed end to end from the models on disk, as a user waits for them:

- loop: ``EmotionRecognizer.from_checkpoint`` then ``predict`` over every sample in this
  process, one clip at a time (decode -> MIMAMO Net -> Multimodal LSTM -> fusion); it
  runs first, on a quiet machine;
- ``workflows.predict.predict`` (what ``jobs.predict`` runs) over the same manifest on a
  local Ray that is already up (as a cluster is), from the call to the last Parquet file:
  actor start-up and model loading included. Worker sizes: the config's ``predict``.

The two outputs are compared (largest difference of any probability). The last line is
one JSON object; ``ratio`` is Ray's samples/s over the loop's.

Needs a fusion checkpoint (make demo) and the demo corpus.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from calibrate import calibration  # bench/calibrate.py: the machine's yardstick

REPO_ROOT = Path(__file__).resolve().parents[1]
os.chdir(REPO_ROOT)

from deepfusion.config import PredictSection, load_config  # noqa: E402


def write_manifest(meld_root: Path, path: Path, repeat: int = 1) -> int:
    rows = []
    for split, folder in (("train", "train"), ("dev", "dev"), ("test", "test")):
        table = pd.read_csv(meld_root / f"{split}_sent_emo.csv")
        for row in table.itertuples():
            clip = meld_root / folder / f"dia{row.Dialogue_ID}_utt{row.Utterance_ID}.mp4"
            if clip.is_file():
                rows += [{"sample_id": f"{split}/{clip.stem}#{k}", "video": str(clip.resolve()),
                          "text": row.Utterance, "speaker": row.Speaker} for k in range(repeat)]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["sample_id", "video", "text", "speaker"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/predict.yaml")
    parser.add_argument("--checkpoint", default="work/fusion/best", type=Path)
    parser.add_argument("--meld", default="work/demo/data/meld")
    parser.add_argument("--repeat", default=5, type=int)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    experiment = load_config(args.config, args.overrides)
    folder = Path(tempfile.mkdtemp(prefix="batch_predict_"))
    manifest = folder / "clips.csv"
    clips = write_manifest(Path(args.meld), manifest, args.repeat)
    if not clips:
        sys.exit(f"no mp4 utterances under {args.meld}; run `make demo` first")

    from deepfusion.inference.emotion import EmotionRecognizer

    samples = pd.read_csv(manifest, keep_default_na=False).to_dict("records")
    started = started_loop = time.perf_counter()
    recognizer = EmotionRecognizer.from_checkpoint(args.checkpoint)
    loaded = time.perf_counter()
    loop = {s["sample_id"]: recognizer.predict(video=s["video"], text=s["text"], speaker=s["speaker"]) for s in samples}
    loop_s = time.perf_counter() - started
    print(f"loop: {clips} samples in {loop_s:.1f} s ({clips / loop_s:.2f} clips/s)", flush=True)
    del recognizer

    from deepfusion.ray_runtime import connect
    from deepfusion.workflows.predict import predict

    connect(experiment.ray)
    started = time.perf_counter()
    result = predict(args.checkpoint, manifest, folder / "out", cfg=experiment.predict or PredictSection())
    ray_s = time.perf_counter() - started
    print(f"jobs.predict: {result.predicted} samples in {ray_s:.1f} s ({result.predicted / ray_s:.2f} clips/s)",
          flush=True)
    table = result.table().set_index("sample_id")
    names = list(loop[next(iter(loop))]["probabilities"])
    difference = max(float(np.max(np.abs(table.loc[sid, [f"prob_{n}" for n in names]].to_numpy(dtype=float)
                                         - np.array([loop[sid]["probabilities"][n] for n in names]))))
                     for sid in loop)
    cfg = experiment.predict or PredictSection()
    loop_load_s = loaded - started_loop
    print(json.dumps({
        "bench": "batch_predict",
        "calibration": calibration(), "samples": clips, "repeat": args.repeat,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "loop_clips_per_s": round(clips / loop_s, 3), "loop_load_s": round(loop_load_s, 2),
        "ray_clips_per_s": round(result.predicted / ray_s, 3), "ratio": round((result.predicted / ray_s) /
                                                                             (clips / loop_s), 3),
        "ray_first_file_s": round(result.first_file_s, 2),
        "ray_steady_clips_per_s": round((result.predicted - cfg.rows_per_file) / (ray_s - result.first_file_s), 3),
        "max_probability_difference": difference, "quarantined": len(result.quarantined),
        "decode": cfg.decode.model_dump(), "model": cfg.model.model_dump(),
    }))


if __name__ == "__main__":
    main()
