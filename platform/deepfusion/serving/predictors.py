"""What serving computes, as plain objects: request decoding, backbone logits, fusion.

No Ray here. Serve's deployments wrap these one-to-one, and ``EmotionPipeline`` chains
them in one process: what the tests compare Serve against and what the latency bench
measures as the in-process baseline.

Decoding goes through ``decode_emotion_record`` and ``load_image``, the functions the
Ray Data jobs use, with the preprocessing settings of the checkpoint's own training data
(the card's ``data_info``), and tensors come from ``model_batch_inputs``: train = serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepfusion.artifacts.inference import CheckpointModel
from deepfusion.config import AudioConfig, ConfigError, MediaLimits, TextConfig, VideoConfig
from deepfusion.media.limits import DEFAULT_LIMITS


@dataclass(frozen=True)
class EmotionRequest:
    """One utterance: paths of its media (either may be None), text and speaker metadata."""

    video_path: str | None = None
    audio_path: str | None = None  # None with a video: the mp4's own audio track
    text: str = ""
    speaker: str = ""
    gender: str | None = None
    age: float | None = None
    # The dialogue so far, oldest first: (speaker, text) pairs. Used by models trained
    # with text.context_turns > 0, exactly as ingestion built the context.
    context: tuple[tuple[str, str], ...] = ()


MAX_CONTEXT_TURNS = 50


def parse_context(raw: str, max_chars: int) -> tuple[tuple[str, str], ...]:
    """The ``context`` form field: a JSON list of ``{"speaker": ..., "text": ...}``, oldest
    first. Raises ``ValueError`` saying what is wrong."""
    import json

    if not raw.strip():
        return ()
    try:
        turns = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(turns, list) or len(turns) > MAX_CONTEXT_TURNS:
        raise ValueError(f"expected a JSON list of at most {MAX_CONTEXT_TURNS} turns")
    parsed = []
    for i, turn in enumerate(turns):
        if not (isinstance(turn, dict) and isinstance(turn.get("text"), str)
                and isinstance(turn.get("speaker", ""), str)):
            raise ValueError(f"turn {i}: expected {{\"speaker\": str, \"text\": str}}, got {turn!r:.80}")
        if len(turn["text"]) > max_chars:
            raise ValueError(f"turn {i}: {len(turn['text'])} characters; the limit is {max_chars}")
        parsed.append((turn.get("speaker", ""), turn["text"]))
    return tuple(parsed)


class EmotionDecoder:
    """Requests -> ``EMOTION_SCHEMA`` rows, exactly as ingestion decoded the training data."""

    def __init__(self, data_info: dict, limits: MediaLimits = DEFAULT_LIMITS):
        settings = data_info["preprocess_config"]
        self.limits = limits
        self.video = VideoConfig(**settings["video"])
        self.audio = AudioConfig(**settings["audio"])
        self.text = TextConfig(**settings["text"])
        self.speaker_ids = dict(data_info.get("speakers", {}))

    def row(self, request: EmotionRequest, sample_id: str = "request") -> dict:
        from deepfusion.media.emotion import decode_emotion_record
        from deepfusion.media.text import dialogue_context, tokenize

        contexts = None
        if self.text.context_turns:
            contexts = [dialogue_context(list(request.context), self.text.context_turns)]
        [input_ids] = tokenize(self.text.tokenizer, [request.text], self.text.max_length, contexts)
        record = {
            "sample_id": sample_id, "split": "serve", "label": -1, "emotion": "", "text": request.text,
            "speaker": request.speaker, "gender": request.gender, "age": request.age,
            "video_path": request.video_path,
            "audio_path": request.audio_path or request.video_path,
            "source": request.video_path or request.audio_path or "<text>",
        }
        return decode_emotion_record(record, input_ids, self.video, self.audio, self.speaker_ids, self.limits)


class FusionModel:
    def __init__(self, checkpoint: Path):
        from deepfusion.artifacts.checkpoint import load_fusion

        self.model, self.card = load_fusion(Path(checkpoint))
        self.sha256 = self.card.content_hash
        self.path = Path(checkpoint)

    def describe(self) -> dict:
        return {"checkpoint": self.path.name, "sha256": self.sha256, "kind": self.card.kind,
                "preset": None, "labels": self.card.label_names, "fusion_weights": self.card.fusion_weights}

    def explain(self, video_logits: np.ndarray, audio_text_logits: np.ndarray) -> list[dict]:
        from deepfusion.models.fusion import explain

        return explain(self.model, torch.tensor(video_logits), torch.tensor(audio_text_logits),
                       self.card.label_names)


def check_servable(fusion: FusionModel, video_card, audio_text_card) -> None:
    """Refuse to serve a fusion model fitted on other backbones, or backbones whose
    training data was preprocessed differently (one request is decoded once, for both)."""
    for name, card in (("video_checkpoint", video_card), ("audio_text_checkpoint", audio_text_card)):
        expected = fusion.card.backbones.get(name, {}).get("sha256")
        if expected != card.content_hash:
            raise ConfigError(
                f"serve.fusion_checkpoint: {fusion.path} was fitted on a {name} with sha256 "
                f"{str(expected)[:12]}, but serve.{name} {card.path} has {card.content_hash[:12]}; "
                f"re-run `python -m jobs.tune_fusion` for these backbones")
    if not (fusion.card.label_names == video_card.label_names == audio_text_card.label_names):
        raise ConfigError(
            f"serve: label maps differ (class order is part of a model): fusion {fusion.card.label_names}, "
            f"video {video_card.label_names}, audio_text {audio_text_card.label_names}; "
            f"predictions would be scrambled")
    if video_card.data_info.get("preprocess_config") != audio_text_card.data_info.get("preprocess_config"):
        raise ConfigError("serve: the two backbones were trained on differently preprocessed data; "
                          "one request cannot be decoded for both")


def image_row(image: bytes, size: int, limits: MediaLimits = DEFAULT_LIMITS) -> dict:
    """An uploaded image -> an ``IMAGE_SCHEMA``-like row, resized as ingestion resized."""
    from deepfusion.media.image import load_image

    pixels = load_image(image, size, limits)
    return {"image": pixels.tobytes(), "height": size, "width": size}


class EmotionPipeline:
    """The whole emotion path in one process: decode -> both backbones -> fusion."""

    def __init__(self, video_checkpoint: Path, audio_text_checkpoint: Path, fusion_checkpoint: Path):
        self.video = CheckpointModel(video_checkpoint)
        self.audio_text = CheckpointModel(audio_text_checkpoint)
        self.fusion = FusionModel(fusion_checkpoint)
        check_servable(self.fusion, self.video.card, self.audio_text.card)
        self.decoder = EmotionDecoder(self.video.card.data_info)

    def predict(self, request: EmotionRequest) -> dict:
        row = self.decoder.row(request)
        video = self.video.logits_of_rows([row])
        audio_text = self.audio_text.logits_of_rows([row])
        return self.fusion.explain(video, audio_text)[0]


class TextileClassifier:
    def __init__(self, checkpoint: Path):
        self.model = CheckpointModel(checkpoint)
        self.image_size = int(self.model.card.data_info["preprocess_config"]["image_size"])

    def row(self, image: bytes) -> dict:
        return image_row(image, self.image_size)

    def classify(self, rows: list[dict]) -> list[dict]:
        probabilities = torch.softmax(torch.as_tensor(self.model.logits_of_rows(rows)), dim=-1).numpy()
        names = self.model.card.label_names
        return [{"class": names[int(p.argmax())], "confidence": float(p.max()),
                 "probabilities": {n: float(v) for n, v in zip(names, p)}} for p in probabilities]
