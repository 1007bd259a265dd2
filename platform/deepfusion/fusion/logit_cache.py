"""The frozen backbones' logits on every split, computed once with Ray Data and kept as Parquet.

Fusion only ever sees logits, so a 50-trial search needs one pass of MIMAMO Net and the
Multimodal LSTM over the data, not fifty. The cache folder is named by its content
key (``artifacts.freshness``) of both checkpoints' hashes and the dataset's manifest: a new
checkpoint or a re-preprocessed dataset gets a new folder, an unchanged one is reused.

Layout: ``<cache_dir>/<key>/split=<name>/*.parquet`` with columns sample_id, label,
video_logits, audio_text_logits (list<float32>, one per class), has_video, has_audio,
has_text; and ``cache.json`` (the key's freshness record, counts). ``cache.json`` is
written last: a folder without it is an interrupted build and is rebuilt.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from deepfusion import storage
from deepfusion.artifacts.checkpoint import checkpoint_hash, read_card
from deepfusion.artifacts.dataset import ShardDataset
from deepfusion.artifacts.freshness import freshness_record
from deepfusion.artifacts.shards import MANIFEST, SCHEMA_VERSION
from deepfusion.config import ConfigError
from deepfusion.config.fusion import FusionConfig
from deepfusion.hashing import sha256_bytes
from deepfusion.ray_runtime import writing_to

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
MASK_COLUMNS = ["has_video", "has_audio", "has_text"]
CACHE_CARD = "cache.json"
CACHE_FORMAT = 1  # bump when the cache's columns change


class BackbonePairPredictor:
    """``map_batches`` callable: both frozen backbones' logits for a batch of shard rows."""

    def __init__(self, video_checkpoint: str, audio_text_checkpoint: str):
        from deepfusion.artifacts.inference import CheckpointModel

        self.video = CheckpointModel(storage.location(video_checkpoint))
        self.audio_text = CheckpointModel(storage.location(audio_text_checkpoint))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "sample_id": batch["sample_id"], "label": batch["label"],
            "video_logits": self.video.logits(batch), "audio_text_logits": self.audio_text.logits(batch),
            **{c: batch[c] for c in MASK_COLUMNS + ["split"] if c in batch},
        }


@dataclass(frozen=True)
class SplitLogits:
    """One split's cached logits as arrays, rows sorted by sample id."""

    sample_ids: list[str]
    labels: np.ndarray  # (N,) int64
    video: np.ndarray  # (N, C) float32
    audio_text: np.ndarray  # (N, C) float32
    masks: dict[str, np.ndarray]  # has_video / has_audio / has_text, (N,) bool

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class LogitCache:
    folder: storage.Location  # a folder or a storage URI
    card: dict

    @property
    def key(self) -> str:
        return storage.name(self.folder)

    @property
    def inputs(self) -> dict:
        """What the key was made of: both checkpoints' paths and hashes, the data manifest."""
        return self.card["freshness"]["inputs"]

    @property
    def label_names(self) -> list[str]:
        return self.card["label_names"]

    def load(self, split: str) -> SplitLogits:
        folder = storage.join(self.folder, f"split={split}")
        if split not in self.card["splits"]:
            raise ConfigError(f"the logit cache {self.folder} has no {split!r} split")
        if not any(f.endswith(".parquet") for f in storage.files(folder)):
            raise ConfigError(f"the logit cache {self.folder} holds no {split!r} rows")
        fs, path = storage.resolve(folder)
        table = pq.read_table(path, filesystem=fs).sort_by("sample_id")
        return SplitLogits(
            sample_ids=table.column("sample_id").to_pylist(),
            labels=table.column("label").to_numpy().astype(np.int64),
            video=_matrix(table.column("video_logits")),
            audio_text=_matrix(table.column("audio_text_logits")),
            masks={c: table.column(c).to_numpy(zero_copy_only=False) for c in MASK_COLUMNS},
        )

    def load_all(self) -> dict[str, SplitLogits]:
        return {split: self.load(split) for split in self.card["splits"]}


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(column.to_numpy(zero_copy_only=False)).astype(np.float32)


def cache_key(cfg: FusionConfig) -> tuple[str, dict]:
    """The cache folder's name and its freshness record: both checkpoints and the data."""
    inputs = {}
    for field in ("video_checkpoint", "audio_text_checkpoint"):
        folder = getattr(cfg, field)
        try:
            inputs[field] = {"path": str(folder), "sha256": checkpoint_hash(folder)}
        except FileNotFoundError as err:
            raise ConfigError(f"fusion.{field}: {err}") from None
    manifest = storage.read_bytes(storage.join(cfg.data, MANIFEST))
    inputs["data"] = {"path": str(cfg.data), "manifest_sha256": sha256_bytes(manifest)}
    record = freshness_record({"cache_format": CACHE_FORMAT, "shard_schema": SCHEMA_VERSION}, inputs)
    return record["key"][:16], record


# Which backbone feeds which input of the fusion (methodology, section 4).
BACKBONE_KINDS = {"video_checkpoint": "mimamo", "audio_text_checkpoint": "multimodal_lstm"}


def _check_backbones(cfg: FusionConfig, data: ShardDataset) -> list[str]:
    """Both backbones are the fusion's, of the data's classes, and can read its rows (its
    layout, and the modalities they need: video for MIMAMO Net, audio for a Multimodal
    LSTM that uses it), whatever the layout: MELD, a manifest, any emotion dataset."""
    for field, kind in BACKBONE_KINDS.items():
        try:
            card = read_card(getattr(cfg, field))
        except ConfigError as err:
            raise ConfigError(f"fusion.{field}: {err}") from None
        if card.kind != kind:
            raise ConfigError(f"fusion.{field}: {getattr(cfg, field)} holds a {card.kind} model; "
                              f"expected {kind}")
        if card.label_names != data.label_names:
            raise ConfigError(f"fusion.{field}: the checkpoint's labels {card.label_names} differ from "
                              f"{data.path}'s {data.label_names}; logits would be scrambled")
        data.resolve_model_config(card.model_config, field=f"fusion.{field}")
    return data.label_names


def open_or_build(cfg: FusionConfig, *, force: bool = False) -> tuple[LogitCache, bool]:
    """The cache for this config, built with Ray Data unless an identical one exists.

    Returns the cache and whether it was (re)built. Needs Ray (connected) only to build.
    """
    data = ShardDataset.open(cfg.data, field="fusion.data")
    label_names = _check_backbones(cfg, data)
    key, freshness = cache_key(cfg)
    folder = storage.join(cfg.cache_dir, key)
    card_file = storage.join(folder, CACHE_CARD)
    if storage.exists(card_file) and not force:
        log.info("logit cache %s is current (both checkpoints and the data unchanged)", folder)
        return LogitCache(folder, json.loads(storage.read_text(card_file))), False

    started = time.perf_counter()
    # built beside its folder and renamed in; on a storage URI (no renames), in place with
    # its card written last: a folder without a card is an interrupted build either way
    staging = folder if storage.is_uri(folder) else folder.with_name(folder.name + ".staging")
    storage.remove(staging)
    splits = [s for s in SPLITS if data.total(s) > 0]
    try:
        _write_splits(cfg, data, splits, staging)
        rows = {split: _count_rows(storage.join(staging, f"split={split}")) for split in splits}
        card = {"key": key, "freshness": freshness, "label_names": label_names, "splits": splits, "rows": rows,
                "build_s": round(time.perf_counter() - started, 2)}
        storage.write_text(storage.join(staging, CACHE_CARD), json.dumps(card, indent=2) + "\n")
        if staging != folder:
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
    except BaseException:
        storage.remove(staging)
        raise
    log.info("logit cache %s built: %s rows in %.1f s", folder, rows, card["build_s"])
    return LogitCache(folder, card), True


def _write_splits(cfg: FusionConfig, data: ShardDataset, splits: list[str], out: storage.Location) -> None:
    """One Ray Data pass over every split (one actor pool loads the backbones once)."""
    import ray.data

    columns = {"sample_id", "label", *MASK_COLUMNS}
    for checkpoint in (cfg.video_checkpoint, cfg.audio_text_checkpoint):
        columns |= set(data.columns(read_card(checkpoint).model_config))
    parts = [data.split(split, sorted(columns)).add_column(
        "split", lambda batch, name=split: pa.array([name] * len(batch), pa.string()), batch_format="pyarrow")
        for split in splits]
    resources = cfg.inference
    logits = parts[0].union(*parts[1:]).map_batches(
        BackbonePairPredictor,
        fn_constructor_kwargs={"video_checkpoint": str(cfg.video_checkpoint),
                               "audio_text_checkpoint": str(cfg.audio_text_checkpoint)},
        batch_size=resources.batch_size, batch_format="numpy", num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources.concurrency),
    )
    # write tasks at the workers' CPU share, not Ray Data's default whole CPU (see writer.py)
    logits.write_parquet(str(out), partition_cols=["split"],
                         ray_remote_args={"num_cpus": resources.num_cpus, **writing_to(out)})


def _count_rows(folder: storage.Location) -> int:
    fs, path = storage.resolve(folder)
    count = 0
    for name in storage.files(folder):
        if name.endswith(".parquet"):
            with fs.open_input_file(f"{path}/{name}") as handle:
                count += pq.ParquetFile(handle).metadata.num_rows
    return count
