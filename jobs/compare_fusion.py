"""Compare the logits fusion learns from: Late and Enhanced Late Fusion per fit source and seed.

    python -m jobs.compare_fusion --config configs/fusion.yaml [--sources train,validation,out_of_fold]
        [--seeds 0,1,2] [--fold-seed N] [--out work/fusion_sources] [--set ...]

Each (source, seed) runs the whole fusion stage afresh (``fusion.fit_data.source``; the seed
sets the search, the validation cut and the folds) on the config's backbone checkpoints,
then prints the test split's mean and spread per model, and writes
``<out>/fusion_sources.{json,md}``. ``out_of_fold`` trains 2 x ``fit_data.folds`` backbones
per seed the first time; ``--fold-seed N`` makes every seed use the folds of seed N (one
set of fold trainings).
"""

from __future__ import annotations

from pathlib import Path

from deepfusion.config import load_config
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--sources", default="train,validation,out_of_fold")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--fold-seed", type=int, default=None,
                        help="out_of_fold: one set of folds (this seed's) for every seed")
    parser.add_argument("--out", default="work/fusion_sources", help="where the searches and the table go")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("fusion", args.config)
    sources = [s for s in args.sources.split(",") if s]
    from deepfusion.config.fusion import FitData

    for source in sources:  # validated before anything runs
        FitData(source=source)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    connect(experiment.ray)
    from deepfusion.workflows.fusion_sources import compare_fit_sources

    result = compare_fit_sources(cfg, sources, seeds, Path(args.out), fold_seed=args.fold_seed,
                                 tracking=experiment.tracking)
    print("\n".join(result.markdown_path.read_text().splitlines()))
    print(f"\ntable: {result.markdown_path}\nper run: {result.json_path}")
    return 0


if __name__ == "__main__":
    run_job(main)
