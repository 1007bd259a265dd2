"""Export a trained model as one self-contained folder, to copy to another machine or bucket.

    deepfusion export work/fusion/best exported/emotion       # the fusion + both backbones
    deepfusion export work/runs/speech_lstm/best exported/speech
    deepfusion serve --config configs/serve.yaml --set serve.fusion_checkpoint=exported/emotion

CHECKPOINT: a fusion checkpoint (its backbones, the ones its card names, are copied under
DEST/backbones/ and named there, relative to it), a backbone or an image classifier
(weights, card and training config; not the optimizer state: an export is for inference).
DEST must not exist, or be empty. Prints what it wrote and each model's content hash.
"""

from __future__ import annotations

import argparse

from deepfusion import storage
from jobs._cli import run_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=storage.location,
                        help="a fusion, backbone or image checkpoint folder (or a storage URI)")
    parser.add_argument("dest", type=storage.location,
                        help="the folder to write, new or empty, or a storage URI (s3://bucket/models/x)")
    args = parser.parse_args()
    from deepfusion.artifacts.bundle import export_checkpoint
    from deepfusion.artifacts.checkpoint import backbone_path, read_card

    card = export_checkpoint(args.checkpoint, args.dest)
    print(f"exported {card.kind} {args.checkpoint} -> {args.dest} (sha256 {card.content_hash[:12]}; "
          f"classes {card.label_names})")
    for field in card.backbones:
        backbone = read_card(backbone_path(card, field))
        print(f"  {field}: {backbone.kind} {card.backbones[field]['path']} "
              f"(sha256 {backbone.content_hash[:12]})")
    return 0


if __name__ == "__main__":
    run_job(main)
