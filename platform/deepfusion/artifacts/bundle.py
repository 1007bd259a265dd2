"""One self-contained folder for a trained model: what ``deepfusion export`` writes.

A backbone (or image classifier) is its weights, card and training config. A fusion
checkpoint is its own weights and card with both backbones copied under
``backbones/video`` and ``backbones/audio_text``, its card naming them there (relative to
itself). The folder can then be copied to any machine or bucket and loaded, evaluated or
served as it is: nothing in it refers to where it was trained. The copies are checked
against the content hashes the fusion card recorded, so a backbone retrained since the
fusion was fitted is refused, not bundled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepfusion import storage
from deepfusion.artifacts.checkpoint import (
    CARD,
    TRAIN_CONFIG,
    WEIGHTS,
    CheckpointError,
    backbone_path,
    checkpoint_hash,
    local_folder,
    read_card,
)

BACKBONES = "backbones"
FIELDS = {"video_checkpoint": "video", "audio_text_checkpoint": "audio_text"}


def export_checkpoint(checkpoint: storage.Location, dest: storage.Location):
    """Write ``checkpoint`` (fusion, backbone or image model) as one folder ``dest``
    (which must not exist, or be empty). Either may be a storage URI: a bundle made here
    is sent to the store whole. Returns the exported card, read back."""
    card = read_card(checkpoint)
    checkpoint = local_folder(checkpoint)
    if storage.is_uri(dest):
        if storage.files(dest):
            raise CheckpointError(f"DEST {dest} is not empty; choose a new prefix")
        local = storage.mirror_path(dest)
    else:
        local = dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise CheckpointError(f"DEST {dest} exists and is not an empty folder; choose a new one")
    staging = local.with_name(f".{local.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _copy_model(checkpoint, staging)
        if card.backbones:
            raw = json.loads((staging / CARD).read_text())
            for field, role in FIELDS.items():
                source = backbone_path(card, field)
                expected = card.backbones[field].get("sha256")
                found = checkpoint_hash(source)
                if found != expected:
                    raise CheckpointError(
                        f"{checkpoint}: was fitted on a {field} with sha256 {str(expected)[:12]}, but {source} "
                        f"now holds {found[:12]}; fit the fusion again for this backbone before exporting")
                _copy_model(local_folder(source), staging / BACKBONES / role)
                raw["backbones"][field]["path"] = f"{BACKBONES}/{role}"
            (staging / CARD).write_text(json.dumps(raw, indent=2) + "\n")
        if storage.is_uri(dest):
            storage.push(staging, dest)
            shutil.rmtree(local, ignore_errors=True)
        elif local.exists():
            local.rmdir()
        local.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(local)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return read_card(dest)


def _copy_model(source: Path, target: Path) -> None:
    target.mkdir(parents=True)
    for name in (WEIGHTS, CARD, TRAIN_CONFIG):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
