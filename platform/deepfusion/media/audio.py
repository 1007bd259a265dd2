"""Audio: mono float32 at a fixed sample rate, from a wav (soundfile) or an mp4's track (PyAV).

Resampling is soxr's high-quality mode, the resampler librosa itself calls for
``res_type="soxr_hq"``; calling it directly spares each decoder process librosa's lazy
imports (about 1.7 s).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import soundfile
import soxr

from deepfusion.media import MediaError, NoAudioTrack

_CONTAINER_SUFFIXES = {".mp4", ".m4a", ".mov", ".mkv", ".webm", ".aac"}


def _read_container_audio(path: str) -> tuple[np.ndarray, int]:
    import av  # FFmpeg; imported lazily, only containers need it

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise NoAudioTrack(f"{path}: the file has no audio track")
            stream = container.streams.audio[0]
            rate = stream.codec_context.sample_rate
            # Downmix in FFmpeg to planar float mono at the native rate; resampling is
            # left to soxr so wav and mp4 inputs share one resampler.
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray()[0])
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as err:
        raise MediaError(f"{path}: corrupt or truncated audio track ({err})") from None
    if not chunks:
        raise MediaError(f"{path}: the audio track decodes to no samples")
    return np.concatenate(chunks).astype(np.float32), int(rate)


# libsndfile reads a cut-off wav without complaint and only notes it in its diagnostics,
# e.g. "data : 61382 (should be 20431)": the header's sample bytes vs what the file holds.
_TRUNCATED_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _read_sound_file(path: str) -> tuple[np.ndarray, int]:
    try:
        truncated = _TRUNCATED_CHUNK.search(soundfile.info(path).extra_info)
        if truncated and int(truncated.group(2)) < int(truncated.group(1)):
            raise MediaError(f"{path}: truncated audio file: header declares {truncated.group(1)} "
                             f"bytes of samples, the file holds {truncated.group(2)}")
        samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise MediaError(f"{path}: corrupt or unsupported audio file ({err})") from None
    return samples.mean(axis=1), int(rate)


def load_audio(
    path: str | os.PathLike, sample_rate: int = 16000, max_seconds: float | None = None
) -> tuple[np.ndarray, int]:
    """Return ``(mono float32 samples at sample_rate, original length in samples at sample_rate)``.

    Clips longer than ``max_seconds`` are cut; the returned length is the uncut one.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(f"{path}: file not found")
    if Path(path).suffix.lower() in _CONTAINER_SUFFIXES:
        samples, rate = _read_container_audio(path)
    else:
        samples, rate = _read_sound_file(path)
    if samples.size == 0:
        raise MediaError(f"{path}: audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise MediaError(f"{path}: audio contains NaN or infinite samples")
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate, quality="HQ")
    original_length = int(samples.shape[0])
    if max_seconds is not None:
        samples = samples[: int(max_seconds * sample_rate)]
    return np.ascontiguousarray(samples, dtype=np.float32), original_length
