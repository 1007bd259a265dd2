"""One emotion sample record (media paths, text, speaker fields) -> one shard row.

The single decoding path for a sample: ingestion's Ray Data decoders call it for every
record, Serve for every request (with the uploaded files as paths), batch prediction for
every row of its input. The row has the columns of ``EMOTION_SCHEMA``
(``deepfusion.artifacts.shards``).
"""

from __future__ import annotations

from deepfusion.config import AudioConfig, MediaLimits, VideoConfig
from deepfusion.media import NoAudioTrack
from deepfusion.media.audio import load_audio
from deepfusion.media.limits import DEFAULT_LIMITS
from deepfusion.media.opensmile import extract
from deepfusion.media.video import decode_video, decode_video_faces


def decode_emotion_record(record: dict, input_ids, video: VideoConfig, audio: AudioConfig,
                          speaker_ids: dict[str, int], limits: MediaLimits = DEFAULT_LIMITS) -> dict:
    """One sample record (paths, text, speaker fields) -> one ``EMOTION_SCHEMA`` row.

    The single decoding path for a sample: ingestion calls it for every record, Serve
    for every request (with the uploaded files as paths). Decoding stays within ``limits``.
    Raises ``MediaError``.
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
        "face_found": None,
        "audio": None,
        "audio_num_samples": None,
        "sample_rate": audio.sample_rate,
        "audio_functionals": None,
        "audio_lld": None,
        "audio_lld_dim": None,
        "has_video": False,
        "has_audio": False,
        "has_text": bool(record["text"]),
        "source": record["source"],
    }
    video_path = _none_if_nan(record.get("video_path"))
    if video_path:
        if video.face_crop:
            frames, found = decode_video_faces(video_path, video.num_frames, video.frame_size, video.face_margin,
                                               _path_or_none(video.face_cascade), limits)
            row["face_found"] = found.tolist()
        else:
            frames = decode_video(video_path, video.num_frames, video.frame_size, limits)
        row["video_frames"], row["has_video"] = frames.tobytes(), True
    audio_path = _none_if_nan(record.get("audio_path"))
    if audio_path:
        try:
            samples, length = load_audio(audio_path, audio.sample_rate, audio.max_seconds, limits)
            row["audio"], row["audio_num_samples"], row["has_audio"] = samples, length, True
            if audio.opensmile is not None:
                row.update(extract(samples, audio.sample_rate, audio.opensmile))
        except NoAudioTrack:
            pass  # an mp4 without sound: the mask says no audio
    return row


def _path_or_none(path) -> str | None:
    return None if path is None else str(path)


def _none_if_nan(value):
    return None if value is None or (isinstance(value, float) and value != value) else value


def _int_or_none(value):
    value = _none_if_nan(value)
    return None if value is None else int(value)
