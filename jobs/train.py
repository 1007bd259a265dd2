"""Train one backbone (textile classifier, MIMAMO Net or Multimodal LSTM) with Ray Train.

    python -m jobs.train --config configs/textile.yaml [--fresh] [--set train.epochs=5 ...]

Re-running with the same ``train.run.name`` resumes from the latest checkpoint (raise
``train.epochs`` to train longer); ``--fresh`` starts the run over.
"""

from __future__ import annotations

import json

from deepfusion.config import load_config
from deepfusion.config.resources import DataResources
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    from deepfusion.models.registry import random_init_parts

    parser = job_parser(__doc__)
    parser.add_argument("--fresh", action="store_true", help="delete the run's checkpoints and start over")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("train", args.config)
    data_resources = experiment.preprocess.data if experiment.preprocess else DataResources()
    connect(experiment.ray)
    from deepfusion.training.trainer import train

    outcome = train(cfg, fresh=args.fresh, data_resources=data_resources, tracking=experiment.tracking)
    best = outcome.best_metrics
    print(f"[{cfg.run.name}] {outcome.epochs_completed} epochs, {outcome.num_workers} workers x "
          f"{outcome.worker_resources}; best epoch {best['epoch']}: val accuracy "
          f"{best['val_accuracy']:.4f}, val weighted F1 {best['val_weighted_f1']:.4f}")
    print(f"  best checkpoint: {outcome.best_checkpoint}")
    random_init = random_init_parts(cfg.model)
    if random_init:
        print(f"  random-init: {', '.join(random_init)} started from random weights, not pretrained ones "
              f"(card.json: 'pretrained')")
    if outcome.test_metrics is not None:
        test = outcome.test_metrics
        print(f"  test: accuracy {test['accuracy']:.4f}, weighted F1 {test['weighted_f1']:.4f} "
              f"(n={test['num_samples']})")
        print(f"  per-class F1: {json.dumps({k: round(v['f1'], 3) for k, v in test['per_class'].items()})}")
        print(f"  metrics: {outcome.test_metrics_path}")
        print(f"  confusion matrix: {outcome.test_confusion_path}")
    print(f"  training curves: {outcome.curves_path}")
    if outcome.tensorboard_dir is not None:
        print(f"  TensorBoard: tensorboard --logdir {outcome.tensorboard_dir}")
    if outcome.mlflow_run_id is not None:
        print(f"  MLflow run {outcome.mlflow_run_id} in experiment {experiment.tracking.experiment!r}: "
              f"mlflow ui --backend-store-uri {experiment.tracking.tracking_uri}")
    print(f"  Ray Train results: {outcome.run_dir}")
    return 0


if __name__ == "__main__":
    run_job(main)
