"""Evaluate a trained model on labeled data it has never seen.

    deepfusion evaluate --checkpoint work/runs/meld_text_lstm/best --data ../shared/data/meld/dev_sent_emo.csv
    deepfusion evaluate --checkpoint work/fusion/best --data my_corpus/manifest.csv
    deepfusion evaluate --checkpoint work/runs/textile/best --data photos/     # <class>/*.jpg

--data: a manifest with a label column (datasets/manifest.md), a MELD csv (--media: the
folder of its dia{D}_utt{U}.mp4; without it the rows are text-only), a speech MANIFEST.csv
(or its folder), or an image folder with one sub-folder per class. The samples are
decoded exactly as the model's training data was (settings and speaker ids from the
checkpoint); bad ones are quarantined and counted. Prints accuracy, weighted and macro
F1 and per-class F1 and writes <data>_metrics.json, <data>_confusion.png and the
predictions to --out (default: evaluation/<data> beside the checkpoint).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfusion.config import PredictSection, RayConfig, load_config
from deepfusion.ray_runtime import connect
from jobs._cli import run_job
from jobs.predict import summary_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint folder (jobs.train's best/)")
    parser.add_argument("--data", required=True, type=Path, help="labeled data: manifest, MELD csv, speech, images")
    parser.add_argument("--media", type=Path, help="a MELD csv's folder of dia{D}_utt{U}.mp4 (+ .wav)")
    parser.add_argument("--out", type=Path, help="output folder (default: evaluation/<data> beside the checkpoint)")
    parser.add_argument("--config", help="an experiment YAML whose ray: and predict: sections to use")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of --config")
    args = parser.parse_args()
    ray_cfg, cfg = RayConfig(), PredictSection()
    if args.config:
        experiment = load_config(args.config, args.overrides)
        ray_cfg, cfg = experiment.ray, experiment.predict or PredictSection()
    from deepfusion.artifacts.checkpoint import read_card

    read_card(args.checkpoint)  # not a checkpoint: say so before starting Ray
    out = args.out or args.checkpoint.resolve().parent / "evaluation" / args.data.stem
    connect(ray_cfg)
    from deepfusion.evaluation.report import metrics_lines
    from deepfusion.workflows.evaluate import evaluate

    result = evaluate(args.checkpoint, args.data, out, media_dir=args.media, cfg=cfg)
    m = result.evaluation.metrics
    print(summary_line(args.checkpoint, args.data, result) + f"; labeled n={m['num_samples']}")
    if result.unavailable:
        print(f"  note: no sample has {' or '.join(result.unavailable)}; the model saw only its other inputs")
    print("\n".join(metrics_lines(m)))
    print(f"  metrics: {result.metrics_path}")
    print(f"  confusion matrix: {result.confusion_path}")
    return 0


if __name__ == "__main__":
    run_job(main)
