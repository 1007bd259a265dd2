"""Write the SYNTHETIC offline demo corpora: a MELD-layout corpus and a textile image folder.

    python -m jobs.make_demo_data --config configs/demo.yaml [--out DIR] [--force]

Seeded and deterministic. A corpus already written with the same settings is kept.
"""

from __future__ import annotations

from deepfusion.config import load_config
from deepfusion.demo import make_demo_data
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--out", help="output folder (overrides demo_data.out)")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = parse_job_args(parser)
    overrides = args.overrides + ([f"demo_data.out={args.out}"] if args.out else [])
    cfg = load_config(args.config, overrides).require("demo_data", args.config)
    written, stamp = make_demo_data(cfg, force=args.force)
    print(f"{'SYNTHETIC demo corpora written to' if written else 'demo corpora up to date:'} {cfg.out}")
    print(f"  meld/     MELD layout, utterances per split: {stamp['meld_rows']}")
    print(f"  textile/  image folder, images per class: {stamp['textile_images']}")
    return 0


if __name__ == "__main__":
    run_job(main)
