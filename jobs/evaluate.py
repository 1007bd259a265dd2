"""Evaluate a trained emotion model on a MELD-layout csv it has never seen.

    python -m jobs.evaluate --checkpoint work/runs/meld_text_lstm/best --data ../shared/data/meld/dev_sent_emo.csv
        [--media DIR] [--out DIR] [--config configs/x.yaml]

The csv is decoded exactly as the model's training data was (settings and speaker ids
from the checkpoint) into Parquet shards under ``--out``; rows that fail MELD's checks
are quarantined and counted. Prints accuracy, weighted F1 and per-class F1 and writes
``<csv stem>_metrics.json`` and ``<csv stem>_confusion.png`` to ``--out`` (default:
``evaluation/<csv stem>`` beside the checkpoint). ``--media``: the folder of the csv's
``dia{D}_utt{U}.mp4`` files; without it the rows are text-only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfusion.config import RayConfig, load_config
from deepfusion.config.resources import DataResources
from deepfusion.ray_runtime import connect
from jobs._cli import run_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint folder (jobs.train's best/)")
    parser.add_argument("--data", required=True, type=Path, help="a MELD-layout csv (Utterance, Speaker, Emotion, ...)")
    parser.add_argument("--media", type=Path, help="folder with the csv's dia{D}_utt{U}.mp4 (+ .wav)")
    parser.add_argument("--out", type=Path, help="output folder (default: evaluation/<csv stem> beside the checkpoint)")
    parser.add_argument("--config", help="an experiment YAML whose ray: and preprocess.data: sections to use")
    args = parser.parse_args()
    ray_cfg, resources = RayConfig(), DataResources()
    if args.config:
        experiment = load_config(args.config)
        ray_cfg = experiment.ray
        resources = experiment.preprocess.data if experiment.preprocess else resources
    from deepfusion.artifacts.checkpoint import read_card

    read_card(args.checkpoint)  # not a checkpoint: say so before starting Ray
    out = args.out or args.checkpoint.resolve().parent / "evaluation" / args.data.stem
    connect(ray_cfg)
    from deepfusion.workflows.evaluate import evaluate

    result = evaluate(args.checkpoint, args.data, out, media_dir=args.media, resources=resources)
    m = result.evaluation.metrics
    print(f"{args.checkpoint} on {args.data} (n={m['num_samples']}; {result.media}; "
          f"{result.quarantined} quarantined{f', see {result.quarantine_path}' if result.quarantine_path else ''})")
    if result.unavailable:
        print(f"  note: no row has {' or '.join(result.unavailable)}; the model saw only its other inputs")
    print(f"  accuracy     {m['accuracy']:.4f}")
    print(f"  weighted F1  {m['weighted_f1']:.4f}")
    print(f"  macro F1     {m['macro_f1']:.4f}")
    print("  per-class F1 " + "  ".join(f"{name} {v['f1']:.3f} (n={v['support']})"
                                        for name, v in m["per_class"].items()))
    print(f"  metrics: {result.metrics_path}")
    print(f"  confusion matrix: {result.confusion_path}")
    return 0


if __name__ == "__main__":
    run_job(main)
