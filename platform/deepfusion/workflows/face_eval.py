"""A pretrained face-expression network on labelled face photos (``jobs.evaluate_faces``).

    MANIFEST.csv -> (labels mapped, unknown ones quarantined) -> Ray Data: decode + face
      crop actors -> FER mini-Xception actors -> predictions.csv, metrics, confusion PNG

No training: the weights are the published FER2013 ones, so every photo is a test photo.
The metrics sit beside two baselines that need no model (chance, and always answering
the most frequent class of the photos evaluated) and are repeated for the photos in
which a face was detected.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepfusion.config.faces import FaceEvalConfig
from deepfusion.evaluation.metrics import classification_metrics, confusion_from_predictions
from deepfusion.evaluation.predict import Evaluation
from deepfusion.evaluation.report import write_evaluation
from deepfusion.hashing import sha256_file
from deepfusion.labels import EMOTIONS
from deepfusion.ray_runtime import reading_local_files
from deepfusion.sources import Quarantined
from deepfusion.sources.face_photos import scan_face_photos

SUMMARY = "faces.json"


@dataclass
class FaceEvaluation:
    out_dir: Path
    summary: dict
    quarantined: list[Quarantined]
    metrics_path: Path
    confusion_path: Path


class _Predictor:
    def __init__(self, weights: str):
        from deepfusion.inference.faces import FaceExpressionClassifier

        self.classifier = FaceExpressionClassifier(weights, torch_threads=1)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from deepfusion.preprocess.face_rows import faces_from_bytes

        probabilities = self.classifier.probabilities(faces_from_bytes(batch["face"]))
        return batch.drop(columns=["face"]).assign(probabilities=list(probabilities))


def evaluate_faces(cfg: FaceEvalConfig) -> FaceEvaluation:
    """Run the evaluation (Ray must be up); writes everything under ``cfg.out_dir``."""
    import ray.data

    from deepfusion.media.faces import load_cascade
    from deepfusion.preprocess.face_rows import FacePhotoDecoder
    from deepfusion.preprocess.quarantine import collect, remote_quarantine_log

    started = time.perf_counter()
    if cfg.face_crop:  # before any actor starts: a missing detector is a config error
        load_cascade(None if cfg.face_cascade is None else str(cfg.face_cascade))
    records, quarantined = scan_face_photos(cfg.manifest, cfg.label_map)
    log = remote_quarantine_log()
    data = cfg.data
    rows = ray.data.from_items(records).map_batches(
        FacePhotoDecoder, fn_constructor_kwargs={
            "face_crop": cfg.face_crop, "face_margin": cfg.face_margin, "limits": cfg.limits, "quarantine": log,
            "face_cascade": None if cfg.face_cascade is None else str(cfg.face_cascade)},
        batch_format="pandas", batch_size=data.batch_size, num_cpus=data.num_cpus,
        compute=ray.data.ActorPoolStrategy(size=data.concurrency), **reading_local_files(data))
    predicted = rows.map_batches(_Predictor, fn_constructor_kwargs={"weights": str(cfg.weights)},
                                 batch_format="pandas", batch_size=64, num_cpus=data.num_cpus,
                                 compute=ray.data.ActorPoolStrategy(size=1)).to_pandas()
    quarantined = quarantined + collect(log)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = predicted.sort_values("sample_id").reset_index(drop=True)
    probabilities = np.stack(predicted["probabilities"]) if len(predicted) else np.zeros((0, len(EMOTIONS)))
    truth = predicted["label"].to_numpy(dtype=np.int64)
    guess = probabilities.argmax(axis=1)
    _write_predictions(out_dir, predicted, probabilities, guess)
    (out_dir / "quarantine.jsonl").write_text("".join(json.dumps(q.to_dict()) + "\n" for q in quarantined))
    evaluation = _evaluation("faces", truth, guess, probabilities, predicted["sample_id"].tolist())
    weights_hash = sha256_file(Path(cfg.weights))
    metrics_path, confusion_path = write_evaluation(
        evaluation, out_dir, checkpoint=Path(cfg.weights), checkpoint_hash=weights_hash,
        title=f"FER2013 mini-Xception on {Path(cfg.manifest).parent.name}")
    found = predicted["face_found"].to_numpy(dtype=bool)
    summary = {
        "manifest": str(cfg.manifest), "weights": str(cfg.weights), "weights_sha256": weights_hash,
        "face_crop": cfg.face_crop, "photos": len(records) + sum(q.stage == "scan" for q in quarantined),
        "evaluated": len(predicted), "faces_found": int(found.sum()),
        "quarantined": len(quarantined), "quarantined_reasons": _reasons(quarantined),
        "metrics": _headline(evaluation.metrics),
        "metrics_faces_found": _headline(_metrics(truth[found], guess[found])) if found.any() else None,
        "baselines": _baselines(truth),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return FaceEvaluation(out_dir, summary, quarantined, metrics_path, confusion_path)


def _metrics(truth: np.ndarray, guess: np.ndarray) -> dict:
    return classification_metrics(confusion_from_predictions(truth, guess, len(EMOTIONS)), EMOTIONS)


def _evaluation(name, truth, guess, probabilities, sample_ids) -> Evaluation:
    confusion = confusion_from_predictions(truth, guess, len(EMOTIONS))
    return Evaluation(name, classification_metrics(confusion, EMOTIONS), confusion, list(EMOTIONS), sample_ids,
                      np.log(np.clip(probabilities, 1e-30, None)))


def _headline(metrics: dict) -> dict:
    keys = ("num_samples", "accuracy", "weighted_f1", "macro_f1")
    per_class = {name: round(c["f1"], 4) for name, c in metrics["per_class"].items()}
    return {k: metrics[k] for k in keys} | {"per_class_f1": per_class}


def _baselines(truth: np.ndarray) -> dict:
    """Chance (uniform over the 7 emotions) and the most frequent class of these photos."""
    if not len(truth):
        return {}
    majority = int(np.bincount(truth, minlength=len(EMOTIONS)).argmax())
    metrics = _metrics(truth, np.full_like(truth, majority))
    return {"chance_accuracy": 1 / len(EMOTIONS), "majority_class": EMOTIONS[majority],
            "majority_accuracy": metrics["accuracy"], "majority_weighted_f1": metrics["weighted_f1"],
            "majority_macro_f1": metrics["macro_f1"]}


def _reasons(quarantined: list[Quarantined]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for q in quarantined:
        counts[q.reason] = counts.get(q.reason, 0) + 1
    return counts


def _write_predictions(out_dir: Path, predicted: pd.DataFrame, probabilities: np.ndarray, guess: np.ndarray) -> None:
    table = pd.DataFrame({"sample_id": predicted["sample_id"], "true_label": predicted["emotion"],
                          "prediction": [EMOTIONS[i] for i in guess],
                          "confidence": probabilities.max(axis=1) if len(guess) else [],
                          "face_found": predicted["face_found"]})
    for i, name in enumerate(EMOTIONS):
        table[f"prob_{name}"] = probabilities[:, i]
    table.to_csv(out_dir / "predictions.csv", index=False)
