"""Emotion samples (MELD rows, speech clips) -> ``EMOTION_SCHEMA`` rows, as a Ray Data actor."""

from __future__ import annotations

import cv2
import pandas as pd
import pyarrow as pa

from deepfusion.artifacts.shards import EMOTION_SCHEMA
from deepfusion.config import AudioConfig, MediaLimits, TextConfig, VideoConfig
from deepfusion.media.emotion import decode_emotion_record
from deepfusion.media.faces import load_cascade
from deepfusion.media.limits import DEFAULT_LIMITS
from deepfusion.media.text import load_tokenizer, tokenize, utterance_text
from deepfusion.preprocess.quarantine import decode_failure, report
from deepfusion.sources import Quarantined


class EmotionRowDecoder:
    """Decodes video frames, audio and token ids for a batch of sample records.

    A callable class so each Ray Data actor loads the tokenizer once. A sample whose
    media is corrupt, over ``limits`` or makes a decoder fail in any way is reported to
    ``quarantine`` (a ``QuarantineLog`` or its actor) with the reason and left out; the
    batch goes on. A sample without media is kept with its modality mask saying so.
    """

    def __init__(self, video: VideoConfig, audio: AudioConfig, text: TextConfig,
                 speaker_ids: dict[str, int], quarantine, limits: MediaLimits = DEFAULT_LIMITS):
        self.video, self.audio, self.text, self.limits = video, audio, text, limits
        self.speaker_ids, self.quarantine = speaker_ids, quarantine
        # Ray runs one decoder per CPU slot; OpenCV's own thread pool on top of that only
        # oversubscribes the cores (and is no faster even alone: see docs/benchmarks.md).
        cv2.setNumThreads(1)
        load_tokenizer(text.tokenizer)
        if video.face_crop:  # a missing detector is the job's error, not every sample's
            load_cascade(None if video.face_cascade is None else str(video.face_cascade))

    def __call__(self, batch: pd.DataFrame) -> pa.Table:
        records = batch.to_dict("records")
        contexts = [r.get("context") or "" for r in records] if self.text.context_turns else None
        texts = [utterance_text(r["text"], r.get("speaker"), self.text.speaker_names) for r in records]
        token_ids = tokenize(self.text.tokenizer, texts, self.text.max_length, contexts)
        rows, rejected = [], []
        for record, ids in zip(records, token_ids):
            try:
                rows.append(decode_emotion_record(record, ids, self.video, self.audio, self.speaker_ids,
                                                  self.limits))
            except Exception as err:  # noqa: BLE001 - any decoder failure is this sample's, not the job's
                rejected.append(Quarantined(record["source"], decode_failure(err), stage="decode"))
        report(self.quarantine, rejected)
        return pa.Table.from_pylist(rows, schema=EMOTION_SCHEMA)
