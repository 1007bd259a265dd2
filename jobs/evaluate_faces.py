"""A pretrained face-expression network (the FER2013 mini-Xception MIMAMO can use as its
frame encoder) on labelled face photos, with no training.

    python -m jobs.evaluate_faces --config configs/faces_fer.yaml [--set faces.face_crop=false]

Prints accuracy, weighted and macro F1 beside the chance and majority baselines, the
same for the photos in which a face was found, and what was quarantined (labels the
label_map leaves out, unreadable files); writes predictions.csv, faces_metrics.json,
faces_confusion.png and faces.json to faces.out_dir.
"""

from __future__ import annotations

from deepfusion.config import load_config
from deepfusion.ray_runtime import connect
from jobs._cli import job_parser, parse_job_args, run_job


def main() -> int:
    args = parse_job_args(job_parser(__doc__))
    experiment = load_config(args.config, args.overrides)
    cfg = experiment.require("faces", args.config)
    from deepfusion.workflows.face_eval import evaluate_faces

    connect(experiment.ray)
    result = evaluate_faces(cfg)
    s = result.summary
    m, base = s["metrics"], s["baselines"]
    print(f"[faces] FER2013 mini-Xception on {s['evaluated']} photos ({s['faces_found']} with a face found, "
          f"face_crop {s['face_crop']}), {s['wall_s']:.0f} s")
    print(f"  accuracy {m['accuracy']:.4f}, weighted F1 {m['weighted_f1']:.4f}, macro F1 {m['macro_f1']:.4f}")
    if s["metrics_faces_found"]:
        f = s["metrics_faces_found"]
        print(f"  photos with a face found ({f['num_samples']}): accuracy {f['accuracy']:.4f}, "
              f"weighted F1 {f['weighted_f1']:.4f}, macro F1 {f['macro_f1']:.4f}")
    print(f"  baselines: chance accuracy {base['chance_accuracy']:.4f}; majority ({base['majority_class']}) "
          f"accuracy {base['majority_accuracy']:.4f}, weighted F1 {base['majority_weighted_f1']:.4f}")
    print(f"  per-class F1: {m['per_class_f1']}")
    print(f"  quarantined: {s['quarantined']} {s['quarantined_reasons']}")
    print(f"  predictions: {result.out_dir / 'predictions.csv'}")
    print(f"  metrics: {result.metrics_path}")
    print(f"  confusion matrix: {result.confusion_path}")
    return 0


if __name__ == "__main__":
    run_job(main)
