"""Average the predictions of several models over the same data (a seed ensemble, say),
optionally corrected towards the rare classes (--logit-adjustment 1).

    deepfusion evaluate --checkpoint work/runs/meld_text_lstm_s0/best --data dev.csv --out work/eval/s0
    deepfusion evaluate --checkpoint work/runs/meld_text_lstm_s1/best --data dev.csv --out work/eval/s1
    deepfusion ensemble --predictions work/eval/s0 work/eval/s1 --out work/eval/ensemble

Each --predictions folder is the --out of jobs.predict or jobs.evaluate. The members must
have predicted the same samples with the same classes. Writes predictions.csv and, when
the data is labeled, the metrics and confusion matrix of the ensemble (and prints each
member's own figures beside them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs._cli import run_job


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", type=Path, nargs="+", required=True, help="prediction folders (--out)")
    parser.add_argument("--out", type=Path, required=True, help="the ensemble's output folder")
    parser.add_argument("--logit-adjustment", type=float, default=0.0, metavar="TAU",
                        help="divide the probabilities by the training class prior to the power TAU "
                             "(1: aimed at the rare classes; 0: none). One folder is then enough")
    args = parser.parse_args()
    from deepfusion.evaluation.report import metrics_lines
    from deepfusion.workflows.ensemble import ensemble

    result = ensemble(args.predictions, args.out, args.logit_adjustment)
    adjusted = f", logit adjustment tau={args.logit_adjustment:g}" if args.logit_adjustment else ""
    print(f"ensemble of {len(result.members)} over {len(result.table)} samples{adjusted} -> {result.out_dir}")
    for member in result.members:
        figures = member.get("metrics")
        own = (f": accuracy {figures['accuracy']:.4f}, weighted F1 {figures['weighted_f1']:.4f}, "
               f"macro F1 {figures['macro_f1']:.4f}") if figures else ""
        print(f"  member {member['checkpoint']}{own}")
    if result.evaluation is not None:
        print(f"  labeled n={result.evaluation.metrics['num_samples']}")
        print("\n".join(metrics_lines(result.evaluation.metrics)))
        print(f"  metrics: {result.metrics_path}\n  confusion matrix: {result.confusion_path}")
    print(f"  predictions: {result.out_dir / 'predictions.csv'}")
    return 0


if __name__ == "__main__":
    run_job(main)
