"""The Parquet shards on disk: their schemas, byte codecs and the dataset manifest.

Shards are Hive-partitioned by split (``<dataset>/split=train/*.parquet``): the files
hold every column below but ``split``, which readers restore from the folder name.
Arrays are stored as plain Arrow types so any Parquet reader can open a shard:
pictures as raw ``uint8`` bytes (C order, RGB) whose shape the sibling columns and
``manifest.json`` give; audio as ``list<float32>``; token ids as ``list<int32>``.
Bump ``SCHEMA_VERSION`` on any change: it is part of every manifest and cache key.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from deepfusion import storage

MANIFEST = "manifest.json"  # a dataset folder's description: counts, label map, settings, freshness
QUARANTINE = "quarantine.jsonl"  # one JSON line per sample left out, with its reason
SCHEMA_VERSION = 3  # 2: Hive split folders (split=train/); 3: openSMILE feature columns, face_found

IMAGE_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("label", pa.int32(), nullable=False),
    pa.field("label_name", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),  # the original image file
    pa.field("copy_index", pa.int32(), nullable=False),  # 0: the original, k: k-th augmented copy
    pa.field("image", pa.binary(), nullable=False),  # uint8 [height, width, 3] RGB
    pa.field("height", pa.int32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
])

EMOTION_SCHEMA = pa.schema([
    pa.field("sample_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("label", pa.int32(), nullable=False),
    pa.field("emotion", pa.string(), nullable=False),
    pa.field("text", pa.string(), nullable=False),
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("speaker", pa.string(), nullable=False),
    pa.field("speaker_id", pa.int32(), nullable=False),  # 0: not a train speaker
    pa.field("gender", pa.string()),
    pa.field("age", pa.float32()),
    pa.field("dialogue_id", pa.int32()),
    pa.field("utterance_id", pa.int32()),
    pa.field("video_frames", pa.binary()),  # uint8 [num_frames, frame_size, frame_size, 3]; null: no video
    pa.field("num_frames", pa.int32(), nullable=False),
    pa.field("frame_size", pa.int32(), nullable=False),
    pa.field("face_found", pa.list_(pa.bool_())),  # per frame, with video.face_crop: a face crop or the whole frame
    pa.field("audio", pa.list_(pa.float32())),  # mono at sample_rate, cut to max_seconds; null: no audio
    pa.field("audio_num_samples", pa.int32()),  # length before the cut
    pa.field("sample_rate", pa.int32(), nullable=False),
    # openSMILE features of the clip (``audio.opensmile``; null: not extracted or no audio):
    # the set's functionals, and its low-level descriptors as frames x audio_lld_dim, row-major.
    pa.field("audio_functionals", pa.list_(pa.float32())),
    pa.field("audio_lld", pa.list_(pa.float32())),
    pa.field("audio_lld_dim", pa.int32()),
    pa.field("has_video", pa.bool_(), nullable=False),
    pa.field("has_audio", pa.bool_(), nullable=False),
    pa.field("has_text", pa.bool_(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
])

def describe(schema: pa.Schema) -> dict[str, str]:
    return {f.name: str(f.type) + ("" if f.nullable else " not null") for f in schema}


def frames_from_bytes(blob: bytes, num_frames: int, frame_size: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(num_frames, frame_size, frame_size, 3)


def image_from_bytes(blob: bytes, height: int, width: int) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8).reshape(height, width, 3)


def read_manifest(dataset_dir: storage.Location) -> dict | None:
    """A dataset folder's ``manifest.json``, or None when it has none (or half of one)."""
    try:
        return json.loads(storage.read_text(storage.join(dataset_dir, MANIFEST)))
    except (OSError, ValueError):
        return None
