"""Evaluate a trained model on labeled data it has never seen.

    deepfusion evaluate --checkpoint work/runs/meld_text_lstm/best --data ../shared/data/meld/dev_sent_emo.csv
    deepfusion evaluate --checkpoint work/fusion/best --data my_corpus/manifest.csv
    deepfusion evaluate --checkpoint work/runs/textile/best --data photos/     # <class>/*.jpg

--data: a manifest with a label column (datasets/manifest.md), a MELD csv (--media: the
folder of its dia{D}_utt{U}.mp4; without it the rows are text-only), a speech MANIFEST.csv
(or its folder), or an image folder with one sub-folder per class. The samples are
decoded exactly as the model's training data was (settings and speaker ids from the
checkpoint); bad ones are quarantined and counted. Prints accuracy, weighted and macro
F1 and per-class F1 and writes <data>_metrics.json, <data>_confusion.png and the
predictions to --out (default: evaluation/<checkpoint>/<data> beside the checkpoint).
Labels are mapped onto the model's classes with the label map of its training data (the
checkpoint's card); --label-map gives another. A label outside the map is quarantined.
"""

from __future__ import annotations

from jobs._cli import run_job
from jobs.predict import label_map_option, prediction_parser, prediction_setup, report_lines


def main() -> int:
    parser = prediction_parser(__doc__, "labeled data: a manifest, MELD csv, speech manifest or image folder",
                               "output folder (default: evaluation/<checkpoint>/<data> beside the checkpoint)",
                               out_required=False)
    args = parser.parse_args()
    cfg = prediction_setup(args)
    from deepfusion.workflows.evaluate import evaluate

    result = evaluate(args.checkpoint, args.data, args.out, media_dir=args.media, cfg=cfg, **label_map_option(args))
    print("\n".join(report_lines(args.checkpoint, args.data, result)))
    return 0


if __name__ == "__main__":
    run_job(main)
