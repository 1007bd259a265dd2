"""Speaker-grouped k-fold cross-validation of one backbone (speech corpora).

    python -m jobs.crossval --config configs/speech_crossval.yaml [--fresh] [--set ...]

Every fold is preprocessed (``<dataset>_fold<k>``, skipped when up to date), trained
(``<run.name>_fold<k>``, resumed when it exists) and tested on its held-out speakers; the
pooled figures over every clip, the per-fold spread and the baselines are printed and
written to ``<run.storage_path>/<run.name>_crossval/`` (crossval.json, confusion PNG).
"""

from __future__ import annotations

import json

from deepfusion.config import load_config
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--fresh", action="store_true", help="start every fold's run over")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    from deepfusion.workflows.crossval import crossval, fold_dataset

    fold_dataset(experiment, args.config)  # refuse a config without folds before Ray starts
    connect(experiment.ray)
    result = crossval(experiment, fresh=args.fresh, source=args.config)
    s = result.summary
    print(f"[{experiment.train.run.name}] {s['folds']}-fold speaker-grouped cross-validation on "
          f"{s['dataset']}, seed {s['seed']}, {s['wall_s']:.0f} s")
    for f in s["folds_detail"]:
        print(f"  fold {f['fold']}: test {f['clips']['test']:3d} clips ({f['train_speakers']} train speakers), "
              f"accuracy {f['accuracy']:.4f}, weighted F1 {f['weighted_f1']:.4f}, best epoch {f['best_epoch']}")
    pooled, base = s["pooled"], s["baselines"]
    print(f"  pooled over {pooled['num_samples']} clips: accuracy {pooled['accuracy']:.4f}, weighted F1 "
          f"{pooled['weighted_f1']:.4f}, macro F1 {pooled['macro_f1']:.4f}")
    print(f"  per fold: accuracy {s['per_fold_mean']['accuracy']:.4f} +- {s['per_fold_std']['accuracy']:.4f}, "
          f"weighted F1 {s['per_fold_mean']['weighted_f1']:.4f} +- {s['per_fold_std']['weighted_f1']:.4f}")
    print(f"  baselines: chance accuracy {base['chance_accuracy']:.4f}; majority (train's most frequent class) "
          f"accuracy {base['majority_accuracy']:.4f}, weighted F1 {base['majority_weighted_f1']:.4f}")
    print(f"  per-class F1: {json.dumps({k: round(v['f1'], 3) for k, v in pooled['per_class'].items()})}")
    print(f"  metrics: {result.metrics_path}")
    print(f"  confusion matrix: {result.confusion_path}")
    return 0


if __name__ == "__main__":
    run_job(main)
