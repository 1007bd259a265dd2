"""A fusion checkpoint: 9 (or 2) weights as safetensors and a card saying what they fuse.

The card names both backbone checkpoints with their content hashes, so Serve can refuse
a fusion model whose backbones have changed since it was fitted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from deepfusion.fusion.models import LateFusion, build_fusion

WEIGHTS = "fusion.safetensors"
CARD = "fusion.json"


@dataclass(frozen=True)
class FusionCard:
    kind: str
    label_names: list[str]
    hyperparameters: dict
    backbones: dict  # video_checkpoint / audio_text_checkpoint -> {"path", "sha256"}
    metrics: dict
    fusion_weights: list[float]


def save_fusion(folder: Path, model: LateFusion, card: FusionCard) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    (folder / CARD).write_text(json.dumps(card.__dict__, indent=2) + "\n")
    return folder


def read_fusion_card(folder: Path) -> FusionCard:
    path = Path(folder) / CARD
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a fusion checkpoint ({CARD} missing); "
                                f"run `python -m jobs.tune_fusion` to make one")
    return FusionCard(**json.loads(path.read_text()))


def load_fusion(folder: Path, device: str | torch.device = "cpu") -> tuple[LateFusion, FusionCard]:
    card = read_fusion_card(folder)
    hp = card.hyperparameters
    model = build_fusion(card.kind, len(card.label_names), hp.get("video_weight", 0.5), hp.get("dropout", 0.0))
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    return model.to(device).eval(), card


def checkpoint_sha256(folder: Path) -> str:
    """Content hash of a fusion checkpoint (weights and card)."""
    digest = hashlib.sha256()
    for name in (WEIGHTS, CARD):
        digest.update(name.encode() + b"\0" + (Path(folder) / name).read_bytes())
    return digest.hexdigest()
