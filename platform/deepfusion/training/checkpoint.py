"""Checkpoint folders: weights as safetensors plus everything needed to use them alone.

    model.safetensors    the model's state dict (no DDP prefixes)
    model_config.json    the resolved model config (preset applied, speaker count filled)
    label_map.json       class names in id order: the contract with fusion and serving
    data.json            the dataset it was trained on: name, kind, preprocess config, speakers
    train_config.json    the training config
    training_state.pt    optimizer, scheduler, AMP scaler, epoch, early-stopping state

``load_model`` rebuilds the model from the folder alone. ``checkpoint_hash`` identifies
the weights and their meaning (config and label map), so caches keyed by it go stale
exactly when a checkpoint changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepfusion.config import ConfigError
from deepfusion.config.models import ModelConfig

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model_config.json"
LABEL_MAP = "label_map.json"
DATA_INFO = "data.json"
TRAIN_CONFIG = "train_config.json"
TRAINING_STATE = "training_state.pt"
HASHED_FILES = (WEIGHTS, MODEL_CONFIG, LABEL_MAP)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save_checkpoint(folder: Path, model: torch.nn.Module, *, model_config, label_names: list[str],
                    data_info: dict, train_config: dict, training_state: dict) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / MODEL_CONFIG).write_text(json.dumps(model_config.model_dump(mode="json"), indent=2))
    (folder / LABEL_MAP).write_text(json.dumps({"names": list(label_names)}, indent=2))
    (folder / DATA_INFO).write_text(json.dumps(data_info, indent=2))
    (folder / TRAIN_CONFIG).write_text(json.dumps(train_config, indent=2))
    torch.save(training_state, folder / TRAINING_STATE)


@dataclass(frozen=True)
class CheckpointCard:
    """What a checkpoint is, without its weights."""

    path: Path
    model_config: object
    label_names: list[str]
    data_info: dict
    content_hash: str

    @property
    def preset(self) -> str:
        return self.model_config.preset


def read_card(folder: Path) -> CheckpointCard:
    folder = Path(folder)
    missing = [name for name in HASHED_FILES + (DATA_INFO,) if not (folder / name).is_file()]
    if missing:
        raise ConfigError(f"{folder} is not a deepfusion checkpoint (missing {', '.join(missing)})")
    from pydantic import TypeAdapter

    model_config = TypeAdapter(ModelConfig).validate_python(json.loads((folder / MODEL_CONFIG).read_text()))
    return CheckpointCard(
        path=folder,
        model_config=model_config,
        label_names=json.loads((folder / LABEL_MAP).read_text())["names"],
        data_info=json.loads((folder / DATA_INFO).read_text()),
        content_hash=checkpoint_hash(folder),
    )


def load_model(folder: Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointCard]:
    """The model of a checkpoint folder, in eval mode, and its card."""
    from safetensors.torch import load_file

    from deepfusion.models import build_model

    card = read_card(folder)
    # Weights come from the checkpoint; skip any pretrained download while building.
    model = build_model(_without_pretrained_loading(card.model_config))
    try:
        model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    except RuntimeError as err:
        first = str(err).splitlines()[1:2]
        raise ConfigError(
            f"{folder}: the weights do not fit the model its model_config.json describes "
            f"({first[0].strip() if first else err}); a checkpoint written before a preset changed "
            f"must be retrained (python -m jobs.train ... --fresh)") from None
    return model.to(device).eval(), card


def _without_pretrained_loading(model_config):
    update = {}
    if hasattr(model_config, "backbone"):
        update["backbone"] = model_config.backbone.model_copy(update={"weights": None})
    for name in ("text_encoder", "audio_encoder"):
        encoder = getattr(model_config, name, None)
        if encoder is not None and encoder.load_weights:
            update[name] = encoder.model_copy(update={"load_weights": False})
    return model_config.model_copy(update=update)


def checkpoint_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for name in HASHED_FILES:
        digest.update(name.encode() + b"\0")
        with open(Path(folder) / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()



class CheckpointModel:
    """A checkpoint's model, frozen, turning shard rows into logits with training's own
    input conversion: what batch evaluation, the logit cache and Serve all run."""

    def __init__(self, folder: Path, device: str | None = None):
        from deepfusion.models.inputs import model_columns

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.card = load_model(Path(folder), self.device)
        self.columns = model_columns(self.card.model_config)

    def describe(self) -> dict:
        return {"checkpoint": str(self.card.path), "sha256": self.card.content_hash,
                "kind": self.card.model_config.kind, "preset": self.card.preset, "labels": self.card.label_names}

    def logits(self, batch: dict) -> np.ndarray:
        """``batch``: column -> array or list, as Ray Data's numpy batches are."""
        from deepfusion.models.inputs import model_batch_inputs

        inputs = model_batch_inputs(self.card.model_config, batch).to(self.device)
        with torch.inference_mode():
            return self.model(inputs).float().cpu().numpy()

    def logits_of_rows(self, rows: list[dict]) -> np.ndarray:
        return self.logits({c: [row[c] for row in rows] for c in self.columns})
