"""Preprocess the configured datasets into Parquet shards with Ray Data.

    python -m jobs.preprocess --config configs/demo.yaml [--force] [--set KEY=VALUE ...]
"""

from __future__ import annotations

from deepfusion.config import load_config
from deepfusion.preprocess.datasets import check_layout, preprocess
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--force", action="store_true", help="redo datasets that are up to date")
    args = parse_job_args(parser)
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("preprocess", args.config)
    for dataset in cfg.datasets:  # a wrong layout is refused before Ray starts
        check_layout(dataset)
    connect(experiment.ray)
    for result in preprocess(cfg, force=args.force):
        m = result.manifest
        state = "up to date, nothing redone" if result.skipped else f"written in {m['wall_s']} s"
        print(f"[{result.name}] {state}: {result.out_dir}")
        for split, per_class in m["counts"].items():
            if per_class:
                print(f"  {split:5s} {sum(per_class.values()):6d}  {per_class}")
        print(f"  quarantined {m['quarantined']} (see {result.out_dir / 'quarantine.jsonl'})")
    return 0


if __name__ == "__main__":
    run_job(main)
