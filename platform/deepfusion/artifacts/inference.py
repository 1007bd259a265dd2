"""Loading a backbone checkpoint for inference: its frozen model turning shard rows into
logits with training's own input conversion (``artifacts.batches``). What batch
evaluation, the logit cache and Serve all run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepfusion import storage
from deepfusion.artifacts.batches import model_batch_inputs, model_columns
from deepfusion.artifacts.checkpoint import load_model


class CheckpointModel:
    """A backbone checkpoint's model, frozen: shard rows in, logits out."""

    def __init__(self, folder: Path, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.card = load_model(storage.location(folder), self.device)
        self.columns = model_columns(self.card.model_config)

    def describe(self) -> dict:
        # The folder's name, not its path: a served listing shows nothing of this machine.
        from deepfusion.models import model_reads

        return {"checkpoint": Path(self.card.path).name, "sha256": self.card.content_hash,
                "kind": self.card.kind, "preset": self.card.preset, "labels": self.card.label_names,
                "reads": model_reads(self.card.model_config),
                "random_init": self.card.pretrained.get("random_init", [])}

    def logits(self, batch: dict) -> np.ndarray:
        """``batch``: column -> array or list, as Ray Data's numpy batches are."""
        inputs = model_batch_inputs(self.card.model_config, batch).to(self.device)
        with torch.inference_mode():
            return self.model(inputs).float().cpu().numpy()

    def logits_of_rows(self, rows: list[dict]) -> np.ndarray:
        return self.logits({c: [row[c] for row in rows] for c in self.columns})
