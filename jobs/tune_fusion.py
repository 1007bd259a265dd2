"""Late Fusion and the Enhanced Late Fusion search (Ray Tune + OptunaSearch) on cached logits.

    python -m jobs.tune_fusion --config configs/fusion.yaml [--fresh | --resume] [--rebuild-cache] [--set ...]

Needs the two trained backbones named in the config (``python -m jobs.train``). Running
it again resumes an interrupted search (finished trials are kept, unfinished ones start
over); ``--resume`` insists on that (an error when there is nothing to resume),
``--fresh`` starts the search over. The logits are recomputed only when a checkpoint or the data changed.
"""

from __future__ import annotations

from deepfusion.config import ConfigError, load_config
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    parser = job_parser(__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fresh", action="store_true", help="delete the search's results and start over")
    mode.add_argument("--resume", action="store_true",
                      help="finish an interrupted search (an error if there is none); the default also resumes")
    parser.add_argument("--rebuild-cache", action="store_true", help="recompute the backbones' logits")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("fusion", args.config)
    if args.resume:
        from ray.tune import Tuner

        from deepfusion.fusion.search import search_dir

        if not Tuner.can_restore(str(search_dir(cfg))):
            raise ConfigError(f"--resume: no search to resume in {search_dir(cfg)} (run without --resume to start one)")
    connect(experiment.ray)
    from deepfusion.workflows.out_of_fold import run_fusion_stage

    outcome = run_fusion_stage(cfg, fresh=args.fresh, rebuild_cache=args.rebuild_cache,
                               tracking=experiment.tracking)
    cache = outcome.cache
    print(f"logit cache {cache.folder}: {'built' if outcome.cache_built else 'reused'}, rows {cache.card['rows']}")
    print(outcome.fit_data.describe())
    search = outcome.search
    print(f"search: {search.num_trials} trials ({search.num_errored} errored) in {search.experiment_dir}")
    print(f"  best: {', '.join(f'{k}={v:.4g}' for k, v in search.best_config.items())}")
    print(f"{'model':<22} {'val acc':>8} {'val wF1':>8} {'test acc':>9} {'test wF1':>9}  weights")
    for row in outcome.rows:
        test = row.test or {"accuracy": float("nan"), "weighted_f1": float("nan")}
        weights = "" if row.fusion_weights is None else f"{row.fusion_weights[0]:.3f} / {row.fusion_weights[1]:.3f}"
        print(f"{row.model:<22} {row.val['accuracy']:>8.4f} {row.val['weighted_f1']:>8.4f} "
              f"{test['accuracy']:>9.4f} {test['weighted_f1']:>9.4f}  {weights}")
    print(f"exported for serving: {outcome.export_dir}")
    print(f"report: {outcome.report}")
    print(f"optuna-dashboard {search.optuna_storage}  |  tensorboard --logdir {search.experiment_dir}")
    if experiment.tracking.tracking_uri:
        print(f"MLflow: every trial in experiment {experiment.tracking.experiment!r}; "
              f"mlflow ui --backend-store-uri {experiment.tracking.tracking_uri}")
    return 0


if __name__ == "__main__":
    run_job(main)
