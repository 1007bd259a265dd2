"""Checkpoint averaging: one model whose weights are the element-wise mean of several
checkpoints of the same model (the last epochs of one fine-tuning run, say).

    jobs.train (keeps checkpoint_epoch_NNNN folders) -> jobs.average_checkpoints -> a checkpoint
    that jobs.evaluate, jobs.predict and Serve load like any other

Averaging the weights of the last few epochs (Vaswani et al., 2017; fairseq's
``average_checkpoints.py``) smooths the noise of the final optimizer steps at no training
cost. The members must be the same architecture, with the same classes and the same
preprocessing, or the mean means nothing; the result's card names them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from deepfusion.artifacts.checkpoint import (
    TRAIN_CONFIG,
    CheckpointCard,
    CheckpointError,
    load_model,
    load_weights,
    read_card,
    write_checkpoint,
)


def average_checkpoints(folders: list[Path], out_dir: Path) -> CheckpointCard:
    """Write the mean of ``folders``' weights to ``out_dir`` and return its card. Floating
    tensors are averaged in float64; integer buffers (BatchNorm's step counts) come from the
    last member. The card is the first member's, with ``averaged_from`` naming every member
    and no metrics (evaluate the result)."""
    folders = [Path(f) for f in folders]
    if len(folders) < 2:
        raise CheckpointError(f"--checkpoints: averaging needs at least 2 checkpoints, got {len(folders)}")
    if Path(out_dir).resolve() in {f.resolve() for f in folders}:
        raise CheckpointError(f"--out {out_dir} is one of the checkpoints being averaged; write elsewhere")
    cards = [read_card(f) for f in folders]
    first = cards[0]
    if first.model_config is None:
        raise CheckpointError(f"{folders[0]} holds a {first.kind} model; only backbones are averaged")
    for folder, card in zip(folders[1:], cards[1:]):
        for what, mine, theirs in (("label set", card.label_names, first.label_names),  # first: it names both
                                   ("model", card.model_config, first.model_config),
                                   ("preprocessing", card.data_info.get("preprocess_config"),
                                    first.data_info.get("preprocess_config"))):
            if mine != theirs:
                lists = f" ({mine} here, {theirs} there)" if what == "label set" else ""
                raise CheckpointError(f"{folder}: a different {what} from {folders[0]}{lists}; only checkpoints of "
                                      f"the same model, classes and preprocessing can be averaged")
    model, _ = load_model(folders[0])
    members = [model.state_dict()] + [load_weights(f) for f in folders[1:]]
    averaged = {}
    for name, reference in members[0].items():
        tensors = [m.get(name) for m in members]
        if any(t is None or t.shape != reference.shape for t in tensors):
            raise CheckpointError(f"{name}: missing or of another shape in one of {[str(f) for f in folders]}")
        if reference.is_floating_point():
            averaged[name] = (torch.stack([t.double() for t in tensors]).mean(0)).to(reference.dtype)
        else:
            averaged[name] = tensors[-1]
    model.load_state_dict(averaged)
    card = dataclasses.replace(first, metrics={}, averaged_from=[
        {"path": str(f.resolve()), "sha256": c.content_hash} for f, c in zip(folders, cards)])
    train_config = folders[0] / TRAIN_CONFIG
    write_checkpoint(Path(out_dir), model, card,
                     train_config=json.loads(train_config.read_text()) if train_config.is_file() else None)
    return read_card(Path(out_dir))
