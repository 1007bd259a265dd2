"""Emotion recognition with trained checkpoints, in one process: decoding, backbones, fusion.

``EmotionRecognizer`` is the Python API (``from deepfusion import EmotionRecognizer``);
batch prediction runs its ``predict_batch`` on Ray Data actors and Serve's deployments
wrap its parts one-to-one (``EmotionDecoder``, ``CheckpointModel``, ``FusionModel``).
Decoding goes through ``decode_emotion_record``, the function ingestion runs, with the
preprocessing settings of the backbones' own training data (the card's ``data_info``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepfusion import storage
from deepfusion.artifacts.inference import CheckpointModel
from deepfusion.config import AudioConfig, ConfigError, MediaLimits, TextConfig, VideoConfig
from deepfusion.media.limits import DEFAULT_LIMITS

# Which input of a fusion model a backbone feeds: MIMAMO Net the video logits, the
# Multimodal LSTM the audio+text logits (methodology, section 4).
ROLES = ("video", "audio_text")


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


def decoding_settings(data_info: dict) -> tuple[VideoConfig, AudioConfig, TextConfig]:
    """The video, audio and text settings a checkpoint's training data was decoded with
    (a speech corpus has no video section: its column sizes are the defaults)."""
    settings = data_info["preprocess_config"]
    return (VideoConfig(**settings.get("video", {})), AudioConfig(**settings.get("audio", {})),
            TextConfig(**settings.get("text", {})))


def per_request_refusal(data_info: dict) -> str | None:
    """Why a model cannot take requests one at a time, or None: features normalised per
    speaker need all of a speaker's clips (batch prediction has them, a request does not)."""
    audio = data_info.get("preprocess_config", {}).get("audio") or {}
    normalize = (audio.get("opensmile") or {}).get("normalize", "none")
    if normalize == "none":
        return None
    return (f"the model's training data ({data_info.get('dataset')}) has openSMILE features normalised per "
            f"{normalize} over all of a {normalize}'s clips, and one request cannot be: predict such a model in "
            f"batch (`python -m jobs.predict`, which normalises per {normalize} over its input), or train it on "
            f"audio.opensmile.normalize: none to serve it")


class EmotionDecoder:
    """Requests -> ``EMOTION_SCHEMA`` rows, exactly as ingestion decoded the training data."""

    def __init__(self, data_info: dict, limits: MediaLimits = DEFAULT_LIMITS):
        self.limits = limits
        self.video, self.audio, self.text = decoding_settings(data_info)
        self.refusal = per_request_refusal(data_info)
        self.speaker_ids = dict(data_info.get("speakers", {}))

    def row(self, request: EmotionRequest, sample_id: str = "request") -> dict:
        if self.refusal:
            raise ConfigError(self.refusal)
        from deepfusion.media.emotion import decode_emotion_record
        from deepfusion.media.text import dialogue_context, tokenize, utterance_text

        contexts = None
        if self.text.context_turns:
            contexts = [dialogue_context(list(request.context), self.text.context_turns)]
        utterance = utterance_text(request.text, request.speaker, self.text.speaker_names)
        [input_ids] = tokenize(self.text.tokenizer, [utterance], self.text.max_length, contexts)
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

        self.model, self.card = load_fusion(storage.location(checkpoint))
        self.sha256 = self.card.content_hash
        self.path = storage.location(checkpoint)

    def describe(self) -> dict:
        return {"checkpoint": storage.name(self.path), "sha256": self.sha256, "kind": self.card.kind,
                "preset": None, "labels": self.card.label_names, "fusion_weights": self.card.fusion_weights}

    def explain(self, video_logits: np.ndarray, audio_text_logits: np.ndarray) -> list[dict]:
        from deepfusion.models.fusion import explain

        return explain(self.model, torch.tensor(video_logits), torch.tensor(audio_text_logits),
                       self.card.label_names)


def check_servable(fusion_card, video_card, audio_text_card) -> None:
    """Refuse a fusion model fitted on other backbones, or backbones whose training data
    was preprocessed differently (one request is decoded once, for both)."""
    for name, card in (("video_checkpoint", video_card), ("audio_text_checkpoint", audio_text_card)):
        expected = fusion_card.backbones.get(name, {}).get("sha256")
        if expected != card.content_hash:
            raise ConfigError(
                f"serve.fusion_checkpoint: {fusion_card.path} was fitted on a {name} with sha256 "
                f"{str(expected)[:12]}, but serve.{name} {card.path} has {card.content_hash[:12]}; "
                f"re-run `python -m jobs.tune_fusion` for these backbones")
    for card in (video_card, audio_text_card):
        refusal = per_request_refusal(card.data_info)
        if refusal:
            raise ConfigError(f"serve: {card.path}: {refusal}")
    if not (fusion_card.label_names == video_card.label_names == audio_text_card.label_names):
        raise ConfigError(
            f"serve: label maps differ (class order is part of a model): fusion {fusion_card.label_names}, "
            f"video {video_card.label_names}, audio_text {audio_text_card.label_names}; "
            f"predictions would be scrambled")
    if video_card.data_info.get("preprocess_config") != audio_text_card.data_info.get("preprocess_config"):
        raise ConfigError("serve: the two backbones were trained on differently preprocessed data; "
                          "one request cannot be decoded for both")


def served_emotion_checkpoints(video: Path | None, audio_text: Path | None, fusion: Path | None,
                               field: str = "serve") -> dict[str, Path]:
    """The emotion checkpoints to serve, by role (``video``, ``audio_text``, ``fusion``),
    checked: a fusion with its two backbones (the ones its card names unless given), or
    one backbone alone in the role it plays (what it reads). Every one must answer single
    requests (``per_request_refusal``). Reads cards only, no weights."""
    from deepfusion.artifacts.checkpoint import backbone_path, read_card
    from deepfusion.models import MODELS, model_reads

    chosen = {"video": video, "audio_text": audio_text}
    if fusion is not None:
        fusion_card = read_card(storage.location(fusion))
        if fusion_card.model_config is not None or not fusion_card.backbones:
            raise ConfigError(f"{field}.fusion_checkpoint: {fusion} holds a {fusion_card.kind}, not a fusion model")
        chosen = {role: storage.location(path) if path is not None else backbone_path(fusion_card, f"{role}_checkpoint")
                  for role, path in chosen.items()}
    cards = {role: read_card(storage.location(path)) for role, path in chosen.items() if path is not None}
    for role, card in cards.items():
        spec = MODELS.get(card.kind)
        if spec is None or spec.task != "emotion" or card.model_config is None:
            raise ConfigError(f"{field}.{role}_checkpoint: {card.path} holds a {card.kind} model, not an emotion "
                              f"backbone")
        plays = backbone_role(card.model_config)
        if plays != role:
            raise ConfigError(f"{field}.{role}_checkpoint: {card.path} is a {card.kind} that reads "
                              f"{' and '.join(model_reads(card.model_config))}: serve it as {field}.{plays}_checkpoint")
        refusal = per_request_refusal(card.data_info)
        if refusal:
            raise ConfigError(f"{field}: {card.path}: {refusal}")
    if fusion is not None:
        check_servable(fusion_card, cards["video"], cards["audio_text"])
        return {**chosen, "fusion": storage.location(fusion)}
    return {role: storage.location(path) for role, path in chosen.items() if path is not None}


def backbone_answers(logits: np.ndarray, label_names: list[str], role: str) -> list[dict]:
    """One backbone alone, in the fields the fusion answers with (no fusion weights)."""
    probabilities = torch.softmax(torch.as_tensor(logits).float(), dim=-1).numpy()
    return [{"emotion": label_names[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {name: float(v) for name, v in zip(label_names, p)},
             "individual_predictions": {role: label_names[int(p.argmax())]},
             "fusion_weights": None} for p in probabilities]


class EmotionRecognizer:
    """A trained emotion model in this process: a fusion checkpoint (with the two backbones
    its card names) or one backbone checkpoint alone.

        recognizer = EmotionRecognizer.from_checkpoint("work/fusion/best")
        recognizer.predict(video="clip.mp4", text="Oh my God!", speaker="Rachel")

    ``predict`` answers with the fields of Serve's ``POST /v1/emotion``.
    """

    def __init__(self, *, fusion_checkpoint: Path | None = None, video_checkpoint: Path | None = None,
                 audio_text_checkpoint: Path | None = None, limits: MediaLimits = DEFAULT_LIMITS,
                 device: str | None = None):
        self.backbones: dict[str, CheckpointModel] = {}
        for role, folder in (("video", video_checkpoint), ("audio_text", audio_text_checkpoint)):
            if folder is not None:
                self.backbones[role] = CheckpointModel(storage.location(folder), device)
        self.fusion = FusionModel(storage.location(fusion_checkpoint)) if fusion_checkpoint is not None else None
        if self.fusion is not None:
            if set(self.backbones) != set(ROLES):
                raise ConfigError("a fusion model needs both backbones (video_checkpoint, audio_text_checkpoint)")
            check_servable(self.fusion.card, self.backbones["video"].card, self.backbones["audio_text"].card)
        elif len(self.backbones) != 1:
            raise ConfigError("without a fusion checkpoint, give exactly one backbone checkpoint")
        first = next(iter(self.backbones.values()))
        if first.card.model_config is None or "preprocess_config" not in first.card.data_info:
            raise ConfigError(f"{first.card.path}: not an emotion checkpoint")
        self.label_names = first.card.label_names
        self.decoder = EmotionDecoder(first.card.data_info, limits)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, *, limits: MediaLimits = DEFAULT_LIMITS,
                        device: str | None = None) -> EmotionRecognizer:
        """A fusion checkpoint (``jobs.tune_fusion``'s export; its backbones are the ones its
        card names) or a MIMAMO Net / Multimodal LSTM checkpoint (``jobs.train``'s best/)."""
        from deepfusion.artifacts.checkpoint import backbone_path, read_card
        from deepfusion.models.registry import FUSION_MODELS, MODELS

        card = read_card(storage.location(checkpoint))
        if card.kind in FUSION_MODELS:
            paths = {f"{role}_checkpoint": backbone_path(card, f"{role}_checkpoint") for role in ROLES}
            return cls(fusion_checkpoint=storage.location(checkpoint), limits=limits, device=device, **paths)
        if card.kind not in MODELS or MODELS[card.kind].task != "emotion":
            raise ConfigError(f"{checkpoint}: a {card.kind} checkpoint does not recognise emotions")
        return cls(**{f"{backbone_role(card.model_config)}_checkpoint": storage.location(checkpoint)}, limits=limits,
                   device=device)

    def predict_batch(self, batch: dict) -> list[dict]:
        """Decoded rows (column -> values, as Ray Data's numpy batches) -> one answer each."""
        return self._answers({role: model.logits(batch) for role, model in self.backbones.items()})

    def _answers(self, logits: dict[str, np.ndarray]) -> list[dict]:
        """Each backbone's logits -> the fusion's answers (or the one backbone's own)."""
        if self.fusion is not None:
            return self.fusion.explain(logits["video"], logits["audio_text"])
        [(role, values)] = logits.items()
        return backbone_answers(values, self.label_names, role)

    def predict(self, video: str | Path | None = None, audio: str | Path | None = None, text: str = "",
                speaker: str = "", gender: str | None = None, age: float | None = None,
                context: list[tuple[str, str]] | tuple = ()) -> dict:
        """One utterance -> emotion, confidence, probabilities, each backbone's prediction,
        the fusion weights, which modalities were present and the time each step took (ms).
        ``audio`` None with a ``video``: the mp4's own sound track. Raises ``MediaError``."""
        started = time.perf_counter()
        row = self.decoder.row(EmotionRequest(
            video_path=str(video) if video else None, audio_path=str(audio) if audio else None, text=text,
            speaker=speaker, gender=gender, age=age, context=tuple(tuple(turn) for turn in context)))
        batch = {column: [row[column]] for column in row}
        decoded = time.perf_counter()
        logits, latency = {}, {"preprocess": _ms(started, decoded)}
        for role, model in self.backbones.items():
            step = time.perf_counter()
            logits[role] = model.logits(batch)
            latency[role] = _ms(step, time.perf_counter())
        step = time.perf_counter()
        [answer] = self._answers(logits)
        done = time.perf_counter()
        return answer | {"modalities": modalities(row),
                         "latency_ms": latency | {"fusion": _ms(step, done), "total": _ms(started, done)}}


def backbone_role(model_config) -> str:
    from deepfusion.models import model_inputs

    return "video" if model_inputs(model_config).get("video") else "audio_text"


def modalities(row: dict) -> dict[str, bool]:
    return {"video": bool(row["has_video"]), "audio": bool(row["has_audio"]), "text": bool(row["has_text"])}


def flat_answer(answer: dict) -> dict:
    """An answer as one table row: ``prob_<emotion>`` columns, ``<role>_emotion`` for each
    backbone, ``fusion_weight_<role>`` (what batch prediction writes to Parquet and CSV)."""
    weights = answer["fusion_weights"] or [None] * len(ROLES)
    return {"emotion": answer["emotion"], "confidence": answer["confidence"],
            **{f"prob_{name}": p for name, p in answer["probabilities"].items()},
            **{f"{role}_emotion": answer["individual_predictions"].get(role) for role in ROLES},
            **{f"fusion_weight_{role}": w for role, w in zip(ROLES, weights)}}


def _ms(start: float, end: float) -> float:
    return round(1000 * (end - start), 2)
