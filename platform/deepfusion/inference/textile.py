"""The textile classifier with a trained checkpoint, in one process.

``TextileClassifier`` is the Python API (``from deepfusion import TextileClassifier``);
Serve's textile deployment and batch prediction's actors run the same object. Images are
decoded and resized by ``media.image.load_image``, as ingestion resized the training set.
"""

from __future__ import annotations

from pathlib import Path

import torch

from deepfusion import storage
from deepfusion.artifacts.inference import CheckpointModel
from deepfusion.config import ConfigError, MediaLimits
from deepfusion.media.limits import DEFAULT_LIMITS


def image_row(image: bytes | str | Path, size: int, limits: MediaLimits = DEFAULT_LIMITS) -> dict:
    """An image (bytes or a path) -> an ``IMAGE_SCHEMA``-like row, resized as ingestion resized."""
    from deepfusion.media.image import load_image

    pixels = load_image(image, size, limits)
    return {"image": pixels.tobytes(), "height": size, "width": size}


class TextileClassifier:
    """A textile checkpoint: images in, class, confidence and the 3 probabilities out.

        TextileClassifier.from_checkpoint("work/runs/textile/best").predict("photo.jpg")
    """

    def __init__(self, checkpoint: Path, limits: MediaLimits = DEFAULT_LIMITS, device: str | None = None):
        self.model = CheckpointModel(storage.location(checkpoint), device)
        if self.model.card.kind != "textile":
            raise ConfigError(f"{checkpoint}: a {self.model.card.kind} checkpoint, not a textile classifier")
        self.image_size = int(self.model.card.data_info["preprocess_config"]["image_size"])
        self.limits = limits

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, *, limits: MediaLimits = DEFAULT_LIMITS,
                        device: str | None = None) -> TextileClassifier:
        return cls(storage.location(checkpoint), limits, device)

    @property
    def label_names(self) -> list[str]:
        return self.model.card.label_names

    def row(self, image: bytes | str | Path) -> dict:
        return image_row(image, self.image_size, self.limits)

    def classify(self, rows: list[dict]) -> list[dict]:
        return self.classify_batch({c: [row[c] for row in rows] for c in self.model.columns})

    def classify_batch(self, batch: dict) -> list[dict]:
        """Decoded rows (column -> values, as Ray Data's numpy batches) -> one answer each."""
        probabilities = torch.softmax(torch.as_tensor(self.model.logits(batch)), dim=-1).numpy()
        names = self.label_names
        return [{"class": names[int(p.argmax())], "confidence": float(p.max()),
                 "probabilities": {n: float(v) for n, v in zip(names, p)}} for p in probabilities]

    def predict(self, image: bytes | str | Path) -> dict:
        """One image (a path or its bytes) -> class, confidence and probabilities. Raises
        ``MediaError`` for a file that is not an accepted, intact image within the limits."""
        [answer] = self.classify([self.row(image)])
        return answer


def flat_answer(answer: dict) -> dict:
    """A textile answer as one table row (``prob_<class>`` columns)."""
    return {"class": answer["class"], "confidence": answer["confidence"],
            **{f"prob_{name}": p for name, p in answer["probabilities"].items()}}
