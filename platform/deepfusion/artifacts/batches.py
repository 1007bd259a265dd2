"""Shard rows -> model input tensors: the one conversion training, caching and serving share.

A batch is a dict of column -> numpy array as Ray Data's ``iter_batches`` yields it
(``batch_format="numpy"``); the Serve app builds the same dict from decoded uploads with
the same row decoders, so a file reaches the models as the same tensors either way.
"""

from __future__ import annotations

import numpy as np
import torch

from deepfusion.artifacts.shards import frames_from_bytes, image_from_bytes
from deepfusion.models import audio_features, model_inputs
from deepfusion.models.inputs import MIN_AUDIO_SAMPLES, EmotionInputs
from deepfusion.models.speaker import gender_id

# The shard columns each model reads: nothing else leaves the Parquet files.
SPEAKER_COLUMNS = ("speaker_id", "gender", "age")
TEXT_COLUMNS = ("input_ids", "has_text")
VIDEO_COLUMNS = ("video_frames", "num_frames", "frame_size", "has_video")
AUDIO_COLUMNS = ("audio", "has_audio")
# openSMILE features in place of the waveform, by the form a model reads
FEATURE_COLUMNS = {"functionals": ("audio_functionals", "has_audio"),
                   "lld": ("audio_lld", "audio_lld_dim", "has_audio")}
IMAGE_COLUMNS = ("image", "height", "width")


def image_inputs(batch: dict[str, np.ndarray]) -> torch.Tensor:
    """``[B, 3, H, W]`` float in [0, 1] from the ``image`` bytes columns."""
    images = np.stack([image_from_bytes(blob, int(h), int(w))
                       for blob, h, w in zip(batch["image"], batch["height"], batch["width"])])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def emotion_columns(*, text: bool, video: bool, audio: bool, features: str | None = None) -> list[str]:
    """The shard columns ``emotion_inputs`` reads for a model with these inputs
    (``features``: the openSMILE form read in place of the waveform)."""
    columns = list(SPEAKER_COLUMNS)
    audio_columns = FEATURE_COLUMNS[features] if features else AUDIO_COLUMNS
    for wanted, group in ((text, TEXT_COLUMNS), (video, VIDEO_COLUMNS), (audio, audio_columns)):
        if wanted:
            columns += group
    return columns


def emotion_inputs(batch: dict[str, np.ndarray], *, text: bool, video: bool, audio: bool,
                   features: str | None = None) -> EmotionInputs:
    size = len(batch["speaker_id"])
    ages = np.array([np.nan if a is None else a for a in batch["age"]], dtype=np.float32)
    inputs = EmotionInputs(
        speaker_id=torch.as_tensor(np.asarray(batch["speaker_id"], dtype=np.int64)),
        gender=torch.tensor([gender_id(g) for g in batch["gender"]], dtype=torch.long),
        age=torch.from_numpy(ages),
    )
    if text:
        inputs.has_text = _flags(batch["has_text"])
        inputs.input_ids, inputs.attention_mask = _pad_tokens(batch["input_ids"], size)
    if video:
        inputs.has_video = _flags(batch["has_video"])
        inputs.frames = _frames(batch)
    if audio:
        inputs.has_audio = _flags(batch["has_audio"])
        if features == "functionals":
            inputs.audio_functionals, present = _functionals(batch["audio_functionals"])
            inputs.has_audio = inputs.has_audio & present
        elif features == "lld":
            inputs.audio_lld, inputs.audio_lld_lengths, present = _descriptors(batch["audio_lld"],
                                                                               batch["audio_lld_dim"])
            inputs.has_audio = inputs.has_audio & present
        else:
            inputs.audio, inputs.audio_lengths = _pad_audio(batch["audio"], batch["has_audio"])
    return inputs


def _functionals(rows) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, F]`` and which rows have features (a row without is zeros)."""
    width = next((len(r) for r in rows if r is not None), 1)
    out = np.zeros((len(rows), width), dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = row
    return torch.from_numpy(out), torch.tensor([r is not None for r in rows])


def _descriptors(rows, dims) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``[B, T, D]`` zero-padded descriptors, their frame counts (0 for a row without any)
    and which rows have any."""
    width = next((int(d) for d in dims if d is not None and d == d), 1)
    frames = [len(r) // width if r is not None else 0 for r in rows]
    out = np.zeros((len(rows), max([1, *frames]), width), dtype=np.float32)
    for i, row in enumerate(rows):
        if frames[i]:
            out[i, :frames[i]] = np.asarray(row, dtype=np.float32).reshape(frames[i], width)
    return torch.from_numpy(out), torch.tensor(frames, dtype=torch.long), torch.tensor([n > 0 for n in frames])


def _flags(values) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=bool))


def _pad_tokens(rows, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    # An empty text still gets one (masked-in) pad token: an all-masked row makes attention NaN.
    lengths = [max(1, 0 if r is None else len(r)) for r in rows]
    ids = np.zeros((size, max(lengths)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        if row is not None and len(row):
            ids[i, :len(row)] = row
        mask[i, :lengths[i]] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _frames(batch) -> torch.Tensor:
    num_frames, frame_size = int(batch["num_frames"][0]), int(batch["frame_size"][0])
    frames = np.zeros((len(batch["video_frames"]), num_frames, frame_size, frame_size, 3), dtype=np.uint8)
    for i, blob in enumerate(batch["video_frames"]):
        if blob is not None:
            frames[i] = frames_from_bytes(blob, num_frames, frame_size)
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div_(255.0)


def _pad_audio(rows, has_audio) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = [len(r) if (r is not None and ok) else 0 for r, ok in zip(rows, has_audio)]
    audio = np.zeros((len(lengths), max([MIN_AUDIO_SAMPLES, *lengths])), dtype=np.float32)
    for i, row in enumerate(rows):
        if lengths[i]:
            audio[i, :lengths[i]] = row
    # A clip-less row reports its padding as length: encoders need >= 1 valid frame.
    valid = [n if n else MIN_AUDIO_SAMPLES for n in lengths]
    return torch.from_numpy(audio), torch.tensor(valid, dtype=torch.long)


def model_columns(model_cfg) -> list[str]:
    """The shard columns a model reads (beside sample_id and label), from the registry."""
    wanted = model_inputs(model_cfg)
    return list(IMAGE_COLUMNS) if wanted.get("image") else emotion_columns(**wanted, features=_form(model_cfg))


def model_batch_inputs(model_cfg, batch: dict[str, np.ndarray]):
    """The inputs of the model ``model_cfg`` describes, from a batch of shard rows."""
    wanted = model_inputs(model_cfg)
    return image_inputs(batch) if wanted.get("image") else emotion_inputs(batch, **wanted, features=_form(model_cfg))


def _form(model_cfg) -> str | None:
    features = audio_features(model_cfg)
    return features[1] if features else None
