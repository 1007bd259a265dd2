"""Write the SYNTHETIC offline demo corpora: a MELD-layout corpus and a textile image folder.

    python -m jobs.make_demo_data --config configs/demo.yaml [--out DIR] [--force]

Seeded and deterministic. A corpus already written with the same settings is kept.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepfusion.config import load_config
from deepfusion.demo.image_corpus import write_image_corpus
from deepfusion.demo.meld_corpus import write_meld_corpus
from jobs._cli import job_parser, run_job

STAMP = "DEMO_CORPUS.json"


def main() -> int:
    parser = job_parser(__doc__)
    parser.add_argument("--out", help="output folder (overrides demo_data.out)")
    parser.add_argument("--force", action="store_true", help="rewrite even if up to date")
    args = parser.parse_args()
    overrides = args.overrides + ([f"demo_data.out={args.out}"] if args.out else [])
    cfg = load_config(args.config, overrides).require("demo_data", args.config)
    out = Path(cfg.out)
    settings = cfg.model_dump(mode="json")
    stamp = out / STAMP
    if not args.force and stamp.is_file() and json.loads(stamp.read_text()).get("settings") == settings:
        print(f"demo corpora up to date: {out}")
        return 0
    shutil.rmtree(out, ignore_errors=True)
    meld_rows = write_meld_corpus(cfg, out / "meld")
    images = write_image_corpus(cfg, out / "textile")
    stamp.write_text(json.dumps({"synthetic": True, "settings": settings, "meld_rows": meld_rows,
                                 "textile_images": images}, indent=2) + "\n")
    print(f"SYNTHETIC demo corpora written to {out}")
    print(f"  meld/     MELD layout, utterances per split: {meld_rows}")
    print(f"  textile/  image folder, images per class: {images}")
    return 0


if __name__ == "__main__":
    run_job(main)
