"""Checkpoint folders, backbone or fusion, with one card that says what the weights are.

    model.safetensors    the model's state dict (no DDP prefixes)
    card.json            the card: kind, class names in id order (the contract between
                         backbones, fusion and serving), and what the model was made from
    train_config.json    backbones only: the training config
    training_state.pt    backbones only: optimizer, scheduler, AMP scaler, epoch, early stopping

A backbone's card holds its resolved model config (preset applied, speaker count filled)
and its training data (``data_info``: dataset, preprocess settings, speaker ids, so a
request is decoded as training data was). A fusion card holds the fusion hyperparameters,
its metrics and weights, and both backbones' paths (relative to the fusion checkpoint's
own folder, so the two move together; ``backbone_path`` resolves them) and content
hashes, so Serve can refuse a fusion fitted on other backbones. ``checkpoint_hash`` covers the weights and the
card: caches and ledgers keyed by it go stale exactly when a checkpoint changes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from deepfusion import storage
from deepfusion.config import ConfigError
from deepfusion.hashing import sha256_files

FORMAT = 1
WEIGHTS = "model.safetensors"
CARD = "card.json"
TRAIN_CONFIG = "train_config.json"
TRAINING_STATE = "training_state.pt"
HASHED_FILES = (WEIGHTS, CARD)


class CheckpointError(ConfigError):
    """A folder that is not a (readable) deepfusion checkpoint; the message names it."""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """The folder, or a file every checkpoint has, does not exist."""


@dataclass(frozen=True)
class CheckpointCard:
    """What a checkpoint is, without its weights. One schema for backbones and fusion."""

    kind: str  # a backbone (models.registry.MODELS) or a fusion head (FUSION_MODELS)
    label_names: list[str]
    model_config: object = None  # backbones: the resolved ``config.ModelConfig``
    data_info: dict = field(default_factory=dict)  # backbones: the data it was trained on
    hyperparameters: dict = field(default_factory=dict)  # fusion: the fit's settings
    backbones: dict = field(default_factory=dict)  # fusion: {field: {"path", "sha256"}}
    metrics: dict = field(default_factory=dict)
    fusion_weights: list[float] = field(default_factory=list)  # fusion: [w1 video, w2 audio_text]
    # backbones: where each pretrained part's weights came from, and which parts were
    # built with random weights instead (``models.registry.pretrained_components``)
    pretrained: dict = field(default_factory=dict)
    # backbones made by ``jobs.average_checkpoints``: [{"path", "sha256"}] of the members
    averaged_from: list[dict] = field(default_factory=list)
    # Set when read from disk; not part of the card's content.
    path: Path | None = field(default=None, compare=False)
    content_hash: str = field(default="", compare=False)

    @property
    def preset(self) -> str | None:
        return getattr(self.model_config, "preset", None)

    def to_json(self) -> dict:
        card = asdict(replace(self, model_config=None, path=None))
        del card["path"], card["content_hash"]
        model_config = self.model_config.model_dump(mode="json") if self.model_config is not None else None
        return {"format": FORMAT, **card, "model_config": model_config}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def write_checkpoint(folder: Path, model: torch.nn.Module, card: CheckpointCard, *,
                     train_config: dict | None = None, training_state: dict | None = None) -> Path:
    """Weights and card; the training loop adds its config and resumable state."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in unwrap(model).state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CARD).write_text(json.dumps(card.to_json(), indent=2) + "\n")
    if train_config is not None:
        (folder / TRAIN_CONFIG).write_text(json.dumps(train_config, indent=2))
    if training_state is not None:
        torch.save(training_state, folder / TRAINING_STATE)
    return folder


def save_checkpoint(folder: Path, model: torch.nn.Module, *, model_config, label_names: list[str],
                    data_info: dict, train_config: dict, training_state: dict) -> Path:
    """A backbone checkpoint, as the training loop writes one each epoch."""
    from deepfusion.models.registry import pretrained_components, random_init_parts

    card = CheckpointCard(kind=model_config.kind, label_names=list(label_names), model_config=model_config,
                          data_info=data_info, pretrained={"components": pretrained_components(model_config),
                                                           "random_init": random_init_parts(model_config)})
    return write_checkpoint(folder, model, card, train_config=train_config, training_state=training_state)


def save_fusion(folder: Path, model: torch.nn.Module, card: CheckpointCard, *,
                relative_to: storage.Location | None = None) -> Path:
    """A fusion checkpoint. ``relative_to``: the folder it will be read from (``folder``,
    or where it is moved once written aside); its backbones are then recorded relative to
    it, so a tree holding both can be moved or copied whole. Without it, as ``card`` has
    them (a search trial's checkpoint, which Tune copies into its own storage)."""
    if relative_to is not None:
        backbones = {}
        for field, entry in card.backbones.items():
            where = backbone_path(card, field)
            backbones[field] = entry | {"path": storage.relative(where, relative_to) or str(where)}
        card = replace(card, backbones=backbones)
    return write_checkpoint(folder, model, card)


def backbone_path(card: CheckpointCard, field: str) -> storage.Location:
    """Where a fusion card's backbone is: its recorded path, relative to the fusion
    checkpoint's folder (an absolute path or a URI, where the two are not in one place, as
    it is)."""
    try:
        recorded = card.backbones[field]["path"]
    except KeyError:
        raise CheckpointError(f"{card.path / CARD}: names no {field} (a fusion card names both backbones)") from None
    if storage.is_uri(recorded):
        return recorded
    recorded = Path(recorded)
    if recorded.is_absolute():
        return recorded
    if card.path is None:
        raise CheckpointError(f"a card not read from disk cannot resolve its {field} path {recorded}")
    resolved = (Path(card.path) / recorded).resolve()
    # a card read from a storage URI (through this node's mirror): the backbone is in the store
    return storage.remote_of(resolved) or resolved


def local_folder(folder: storage.Location) -> Path:
    """A checkpoint folder on this node: one on a storage URI is mirrored here first (only
    files that changed are fetched), so every reader below takes either."""
    if not storage.is_uri(folder):
        return Path(folder)
    try:
        return storage.materialize(folder)
    except FileNotFoundError:
        raise CheckpointNotFound(f"{folder}: no checkpoint there (nothing under this URI)") from None


def checkpoint_hash(folder: storage.Location) -> str:
    """The content hash of a checkpoint folder (weights and card)."""
    folder = local_folder(folder)
    try:
        return sha256_files(folder, HASHED_FILES)
    except FileNotFoundError as err:
        raise CheckpointNotFound(_not_a_checkpoint(Path(folder), [Path(err.filename).name])) from None


def _not_a_checkpoint(folder: Path, missing: list[str]) -> str:
    if (folder / "model_config.json").is_file() or (folder / "fusion.json").is_file():
        return (f"{folder} was written by an earlier version of deepfusion (no {CARD}); "
                f"train it again (python -m jobs.train ... --fresh, or jobs.tune_fusion --fresh)")
    return (f"{folder} is not a deepfusion checkpoint (missing {', '.join(missing)}); train a backbone with "
            f"`python -m jobs.train` or a fusion model with `python -m jobs.tune_fusion`")


def read_card(folder: storage.Location) -> CheckpointCard:
    """A checkpoint's card (``CheckpointError`` naming the folder when it is none)."""
    folder = local_folder(folder)
    missing = [name for name in HASHED_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointNotFound(_not_a_checkpoint(folder, missing))
    try:
        raw = json.loads((folder / CARD).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{folder / CARD}: not a readable card (truncated or corrupt: {err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{folder / CARD}: not a readable card (a JSON {type(raw).__name__}, not an object)")
    version = raw.pop("format", None)
    if version != FORMAT:
        raise CheckpointError(f"{folder / CARD}: card format {version!r}; this version of deepfusion reads {FORMAT}")
    if raw.get("model_config") is not None:
        from pydantic import TypeAdapter

        from deepfusion.config.architectures import ModelConfig

        try:
            raw["model_config"] = TypeAdapter(ModelConfig).validate_python(raw["model_config"])
        except ValueError as err:
            raise CheckpointError(f"{folder / CARD}: its model_config is not valid ({err})") from None
    try:
        return CheckpointCard(**raw, path=folder, content_hash=checkpoint_hash(folder))
    except TypeError as err:
        raise CheckpointError(f"{folder / CARD}: not a readable card ({err})") from None


def load_weights(folder: storage.Location) -> dict[str, torch.Tensor]:
    """A checkpoint's safetensors weights (``CheckpointError`` naming the file when corrupt)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = local_folder(folder) / WEIGHTS
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: not readable safetensors (truncated or corrupt: {err})") from None


def load_training_state(folder: storage.Location, device: str | torch.device = "cpu") -> dict:
    """The resumable state the training loop saved beside the weights (optimizer, scheduler,
    history, metrics). Loaded with ``weights_only=True``: tensors and plain Python values
    only, so a planted pickle that would run code is refused, naming the file."""
    import pickle

    path = local_folder(folder) / TRAINING_STATE
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointNotFound(f"{path}: missing; this checkpoint cannot be resumed or evaluated") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refused or unreadable training state ({first[:300]})") from None


def load_model(folder: storage.Location, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, CheckpointCard]:
    """The backbone of a checkpoint folder, in eval mode, and its card."""
    from deepfusion.models import build_model

    card = read_card(folder)
    if card.model_config is None:
        raise CheckpointError(f"{folder} holds a {card.kind} model, not a backbone")
    # Weights come from the checkpoint; skip any pretrained download while building.
    model = build_model(_without_pretrained_loading(card.model_config))
    weights = load_weights(folder)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).splitlines()[1:2]
        raise CheckpointError(
            f"{folder}: the weights do not fit the model its {CARD} describes "
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


def load_fusion(folder: storage.Location, device: str | torch.device = "cpu"):
    """The fusion model of a checkpoint folder, in eval mode, and its card."""
    from deepfusion.models.fusion import build_fusion

    card = read_card(folder)
    if card.model_config is not None:
        raise CheckpointError(f"{folder} holds a {card.kind} backbone, not a fusion model")
    hp = card.hyperparameters
    model = build_fusion(card.kind, len(card.label_names), hp.get("video_weight", 0.5), hp.get("dropout", 0.0))
    try:
        model.load_state_dict(load_weights(folder))
    except RuntimeError as err:
        raise CheckpointError(f"{folder}: the weights do not fit the {card.kind} its {CARD} describes "
                              f"({str(err).splitlines()[-1].strip()})") from None
    return model.to(device).eval(), card
