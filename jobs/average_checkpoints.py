"""Average the weights of several checkpoints of one model (the last epochs of a run) into one.

    deepfusion average-checkpoints --checkpoints work/runs/meld_text_lstm/checkpoint_epoch_0003 \
        work/runs/meld_text_lstm/checkpoint_epoch_0004 --out work/runs/meld_text_lstm/averaged
    deepfusion evaluate --checkpoint work/runs/meld_text_lstm/averaged --data dev.csv

A training run keeps its last ``run.checkpoints_to_keep`` epochs as checkpoint_epoch_NNNN
folders beside best/. The members must share the model, the classes and the preprocessing;
the result is a checkpoint like any other (evaluate, predict, serve), its card naming them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs._cli import run_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True, help="checkpoint folders")
    parser.add_argument("--out", type=Path, required=True, help="the averaged checkpoint's folder")
    args = parser.parse_args()
    from deepfusion.artifacts.averaging import average_checkpoints

    card = average_checkpoints(args.checkpoints, args.out)
    print(f"averaged {len(card.averaged_from)} checkpoints of {card.kind} -> {card.path} "
          f"(sha256 {card.content_hash[:12]})")
    for member in card.averaged_from:
        print(f"  {member['path']} ({member['sha256'][:12]})")
    return 0


if __name__ == "__main__":
    run_job(main)
