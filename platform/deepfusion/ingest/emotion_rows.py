"""Emotion samples (MELD rows, speech clips) -> ``EMOTION_SCHEMA`` rows, as a Ray Data actor."""

from __future__ import annotations

import cv2
import pandas as pd
import pyarrow as pa

from deepfusion.config import AudioConfig, TextConfig, VideoConfig
from deepfusion.ingest.quarantine import report
from deepfusion.ingest.schema import EMOTION_SCHEMA
from deepfusion.preprocessing import MediaError, NoAudioTrack
from deepfusion.preprocessing.audio import load_audio
from deepfusion.preprocessing.text import load_tokenizer, tokenize
from deepfusion.preprocessing.video import decode_video
from deepfusion.sources import Quarantined


class EmotionRowDecoder:
    """Decodes video frames, audio and token ids for a batch of sample records.

    A callable class so each Ray Data actor loads the tokenizer once. A sample whose
    media is corrupt is reported to ``quarantine`` (a ``QuarantineLog`` or its actor)
    and left out; a sample without media is kept with its modality mask saying so.
    """

    def __init__(self, video: VideoConfig, audio: AudioConfig, text: TextConfig,
                 speaker_ids: dict[str, int], quarantine):
        self.video, self.audio, self.text = video, audio, text
        self.speaker_ids, self.quarantine = speaker_ids, quarantine
        # Ray runs one decoder per CPU slot; OpenCV's own thread pool on top of that only
        # oversubscribes the cores (and is no faster even alone: see docs/benchmarks.md).
        cv2.setNumThreads(1)
        load_tokenizer(text.tokenizer)

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        records = batch.to_dict("records")
        contexts = [r.get("context") or "" for r in records] if self.text.context_turns else None
        token_ids = tokenize(self.text.tokenizer, [r["text"] for r in records], self.text.max_length, contexts)
        rows, rejected = [], []
        for record, ids in zip(records, token_ids):
            try:
                rows.append(decode_emotion_record(record, ids, self.video, self.audio, self.speaker_ids))
            except MediaError as err:
                rejected.append(Quarantined(record["source"], str(err), stage="decode"))
        report(self.quarantine, rejected)
        return pa.Table.from_pylist(rows, schema=EMOTION_SCHEMA)

def decode_emotion_record(record: dict, input_ids, video: VideoConfig, audio: AudioConfig,
                          speaker_ids: dict[str, int]) -> dict:
    """One sample record (paths, text, speaker fields) -> one ``EMOTION_SCHEMA`` row.

    The single decoding path for a sample: ingestion calls it for every record, Serve
    for every request (with the uploaded files as paths). Raises ``MediaError``.
    """
    row = {
        "sample_id": record["sample_id"],
        "split": record["split"],
        "label": int(record["label"]),
        "emotion": record["emotion"],
        "text": record["text"],
        "input_ids": input_ids,
        "speaker": record["speaker"],
        "speaker_id": speaker_ids.get(record["speaker"], 0),
        "gender": _none_if_nan(record.get("gender")),
        "age": _none_if_nan(record.get("age")),
        "dialogue_id": _int_or_none(record.get("dialogue_id")),
        "utterance_id": _int_or_none(record.get("utterance_id")),
        "video_frames": None,
        "num_frames": video.num_frames,
        "frame_size": video.frame_size,
        "audio": None,
        "audio_num_samples": None,
        "sample_rate": audio.sample_rate,
        "has_video": False,
        "has_audio": False,
        "has_text": bool(record["text"]),
        "source": record["source"],
    }
    video_path = _none_if_nan(record.get("video_path"))
    if video_path:
        frames = decode_video(video_path, video.num_frames, video.frame_size)
        row["video_frames"], row["has_video"] = frames.tobytes(), True
    audio_path = _none_if_nan(record.get("audio_path"))
    if audio_path:
        try:
            samples, length = load_audio(audio_path, audio.sample_rate, audio.max_seconds)
            row["audio"], row["audio_num_samples"], row["has_audio"] = samples, length, True
        except NoAudioTrack:
            pass  # an mp4 without sound: the mask says no audio
    return row


def _none_if_nan(value):
    return None if value is None or (isinstance(value, float) and value != value) else value


def _int_or_none(value):
    value = _none_if_nan(value)
    return None if value is None else int(value)
