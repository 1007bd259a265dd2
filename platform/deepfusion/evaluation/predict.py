"""Batch inference of a checkpoint over a dataset split with Ray Data, and its metrics.

``CheckpointPredictor`` is the callable class ``map_batches`` runs on an actor pool: each
actor loads the checkpoint once and turns shard rows into logits with the same input
conversion training used (``artifacts.inference.CheckpointModel``, which the fusion
logit cache runs for both backbones at once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfusion import storage
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.config import ConfigError
from deepfusion.config.resources import DataResources
from deepfusion.evaluation.metrics import classification_metrics, confusion_from_predictions


class CheckpointPredictor:
    def __init__(self, checkpoint_dir: str):
        from deepfusion.artifacts.inference import CheckpointModel

        self.model = CheckpointModel(storage.location(checkpoint_dir))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"sample_id": batch["sample_id"], "label": batch["label"], "logits": self.model.logits(batch)}


@dataclass(frozen=True)
class Evaluation:
    split: str
    metrics: dict
    confusion: np.ndarray
    label_names: list[str]
    sample_ids: list[str]
    logits: np.ndarray


def predict_split(checkpoint_dir: Path, data: ShardDataset, split: str, resources: DataResources,
                  batch_size: int = 32):
    """A Ray Dataset of (sample_id, label, logits) for ``split`` (lazy)."""
    from deepfusion.artifacts.checkpoint import read_card

    card = read_card(checkpoint_dir)
    if card.label_names != data.label_names:
        raise ConfigError(
            f"label maps differ: checkpoint {checkpoint_dir} has {card.label_names}, dataset "
            f"{data.path} has {data.label_names}; predictions would be scrambled"
        )
    import ray.data

    return data.split(split, data.columns(card.model_config)).map_batches(
        CheckpointPredictor, fn_constructor_kwargs={"checkpoint_dir": str(checkpoint_dir)},
        batch_size=batch_size, batch_format="numpy", num_cpus=resources.num_cpus,
        # One actor to start, more while blocks queue: a small split (a demo's test set,
        # one block) starts one model, not ``concurrency`` of them competing for the cores.
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources.concurrency),
    )


def evaluate_split(checkpoint_dir: Path, data: ShardDataset, split: str, resources: DataResources,
                   batch_size: int = 32) -> Evaluation:
    rows = predict_split(checkpoint_dir, data, split, resources, batch_size).to_pandas()
    rows = rows.sort_values("sample_id", kind="stable")
    logits = np.stack(rows["logits"].to_numpy()) if len(rows) else np.zeros((0, len(data.label_names)))
    labels = rows["label"].to_numpy()
    confusion = confusion_from_predictions(labels, logits.argmax(axis=1), len(data.label_names))
    return Evaluation(split, classification_metrics(confusion, data.label_names), confusion,
                      data.label_names, rows["sample_id"].tolist(), logits)
