"""Predict with a trained model over new data, with Ray Data; results to Parquet (and CSV).

    deepfusion predict --checkpoint work/fusion/best --data clips/ --out work/predictions/clips
    deepfusion predict --checkpoint work/runs/meld_text_lstm/best --data ../shared/data/meld/dev_sent_emo.csv --out DIR
    deepfusion predict --checkpoint work/runs/textile/best --data photos/ --out DIR --csv

--checkpoint: a fusion checkpoint (jobs.tune_fusion's export, with the backbones its card
names), a MIMAMO Net or Multimodal LSTM checkpoint, or a textile classifier.
--data: a manifest (.csv with sample_id, .jsonl, .parquet; datasets/manifest.md), a MELD
csv (--media: its clips), a speech MANIFEST.csv, a folder of clips paired by stem
(x.mp4, x.wav, x.txt), or, for textile, a folder of images. Writes --out/predictions/
(Parquet: sample_id, prediction, confidence, prob_<class>, each backbone's prediction,
fusion weights, modalities, true label, source), quarantine.jsonl, and with labels
<data>_metrics.json and <data>_confusion.png. A rerun predicts only what is not done yet.
Worker sizes: the --config file's predict section (decode workers, model actors).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deepfusion import storage
from deepfusion.config import PredictSection, RayConfig, load_config
from deepfusion.ray_runtime import connect
from jobs._cli import run_job


def prediction_parser(description: str, data_help: str, out_help: str, out_required: bool) -> argparse.ArgumentParser:
    """The options jobs.predict and jobs.evaluate share."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=storage.location,
                        help="a fusion, backbone or textile checkpoint (a folder or a storage URI)")
    parser.add_argument("--data", required=True, type=Path, help=data_help)
    parser.add_argument("--out", required=out_required, type=storage.location, help=out_help)
    parser.add_argument("--media", type=Path, help="a MELD csv's folder of dia{D}_utt{U}.mp4 (+ .wav)")
    parser.add_argument("--label-map", metavar="MAP",
                        help="the data's labels onto the model's classes, overriding the map in the checkpoint's "
                             "card: a .json/.yaml file {label: class} or inline hap=happy,ang=angry")
    parser.add_argument("--config", help="an experiment YAML whose ray: and predict: sections to use")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of --config, e.g. predict.model.num_gpus=0.5")
    return parser


def label_map_option(args: argparse.Namespace) -> dict:
    """``--label-map`` as predict()'s keyword arguments (none when not given)."""
    if not args.label_map:
        return {}
    from deepfusion.workflows.predict_inputs import read_label_map

    label_map, origin = read_label_map(args.label_map)
    return {"label_map": label_map, "label_map_origin": origin}


def prediction_setup(args: argparse.Namespace) -> PredictSection:
    """The predict section of --config (or the defaults); checks --checkpoint and
    --label-map, then joins Ray."""
    ray_cfg, cfg = RayConfig(), PredictSection()
    if args.config:
        experiment = load_config(args.config, args.overrides)
        ray_cfg, cfg = experiment.ray, experiment.predict or PredictSection()
    from deepfusion.artifacts.checkpoint import read_card

    read_card(args.checkpoint)  # not a checkpoint: say so before starting Ray
    label_map_option(args)
    connect(ray_cfg)
    return cfg


def report_lines(checkpoint: Path, data: Path, result) -> list[str]:
    """What both jobs print: counts, a missing modality, and with labels the metrics."""
    from deepfusion.evaluation.report import metrics_lines

    quarantine = f", see {result.shown(result.quarantine_path)}" if result.quarantine_path else ""
    media = f"; {result.media}" if result.media else ""
    lines = [f"{checkpoint} on {data} ({result.layout}; n={result.total}{media}): {result.predicted} predicted, "
             f"{result.already_done} already done, {len(result.quarantined)} quarantined{quarantine}"]
    if result.unavailable:
        lines.append(f"  note: no sample has {' or '.join(result.unavailable)}; the model saw only its other inputs")
    if result.evaluation is not None:
        lines += [f"  labeled n={result.evaluation.metrics['num_samples']}", *metrics_lines(result.evaluation.metrics),
                  f"  metrics: {result.shown(result.metrics_path)}",
                  f"  confusion matrix: {result.shown(result.confusion_path)}"]
    return lines


def main() -> int:
    parser = prediction_parser(__doc__, "a manifest, MELD csv, speech manifest or folder",
                               "output folder (a rerun resumes it)", out_required=True)
    parser.add_argument("--csv", action="store_true", help="also write --out/predictions.csv")
    parser.add_argument("--overwrite", action="store_true", help="discard the predictions already in --out")
    args = parser.parse_args()
    cfg = prediction_setup(args)
    from deepfusion.workflows.predict import predict

    result = predict(args.checkpoint, args.data, args.out, media_dir=args.media, cfg=cfg, write_csv=args.csv,
                     overwrite=args.overwrite, **label_map_option(args))
    print("\n".join(report_lines(args.checkpoint, args.data, result)))
    print(f"  predictions: {result.shown(result.predictions_dir)}"
          + (f" and {result.shown(result.csv_path)}" if result.csv_path else ""))
    return 0


if __name__ == "__main__":
    run_job(main)
