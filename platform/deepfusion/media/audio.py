"""Audio: mono float32 at a fixed sample rate, from a wav/flac/ogg (soundfile), an mp3 or
aac stream, or a container's audio track (mp4/mov/m4a, mkv/webm, avi, flv; PyAV).

Bounded: a track longer than ``limits.max_audio_seconds`` by its header is refused, and
only the first ``max_seconds`` (plus a short resampling margin) are ever decoded, block by
block, downmixed as they arrive: a low-bitrate upload that would expand to hours of PCM
costs what ``max_seconds`` of it costs. Every block checks the decoding deadline.

Resampling is soxr's high-quality mode, the resampler librosa itself calls for
``res_type="soxr_hq"``; calling it directly spares each decoder process librosa's lazy
imports (about 1.7 s).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import soundfile
import soxr

from deepfusion.config import MediaLimits
from deepfusion.media import MediaError, NoAudioTrack
from deepfusion.media.formats import AUDIO_STREAM_FORMATS, SOUND_FILE_FORMATS, VIDEO_FORMATS, sniff_file
from deepfusion.media.limits import DEFAULT_LIMITS, Deadline, over_limit

# Streams PyAV reads whose first bytes may not say what they are (an MP3 after junk bytes).
_STREAM_SUFFIXES = {".aac", ".mp3", ".m4a"}
# Decoded past max_seconds so that the resampler's filter sees real signal at the cut.
_RESAMPLE_MARGIN_S = 0.05
# Beyond these a file is no speech recording; refused before decoding.
MAX_NATIVE_RATE = 192_000
MAX_CHANNELS = 16
_BLOCK_S = 1.0


def _frames_wanted(rate: int, max_seconds: float | None) -> int | None:
    return None if max_seconds is None else math.ceil((max_seconds + _RESAMPLE_MARGIN_S) * rate)


def _check_stream(path: str, rate: int, channels: int, seconds: float | None, limits: MediaLimits) -> None:
    if not 0 < rate <= MAX_NATIVE_RATE:
        raise MediaError(f"{path}: unsupported sample rate {rate} Hz (at most {MAX_NATIVE_RATE})")
    if not 0 < channels <= MAX_CHANNELS:
        raise MediaError(f"{path}: unsupported channel count {channels} (at most {MAX_CHANNELS})")
    if seconds is not None and seconds > limits.max_audio_seconds:
        raise over_limit(path, "duration (s)", round(seconds, 1), "max_audio_seconds", limits.max_audio_seconds)


def _read_container_audio(path: str, wanted_s: float | None, limits: MediaLimits,
                          deadline: Deadline) -> tuple[np.ndarray, int, float | None]:
    """(mono samples at the native rate, that rate, the track's duration by header or None)."""
    import av  # FFmpeg; imported lazily, only containers need it

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise NoAudioTrack(f"{path}: the file has no audio track")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or 0)
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            _check_stream(path, rate, stream.codec_context.channels or 1, duration, limits)
            wanted = _frames_wanted(rate, wanted_s)
            # Without max_seconds, the header's duration cap also bounds what is decoded
            # (a header may lie).
            cap = wanted if wanted is not None else math.ceil(limits.max_audio_seconds * rate)
            # Downmix in FFmpeg to planar float mono at the native rate; resampling is
            # left to soxr so wav and mp4 inputs share one resampler.
            resampler = av.AudioResampler(format="fltp", layout="mono", rate=rate)
            chunks, have, ended = [], 0, True
            for frame in container.decode(stream):
                deadline.check()
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray()[0])
                    have += chunks[-1].shape[0]
                if have >= cap:
                    ended = False
                    break
            if ended:
                for out in resampler.resample(None):
                    chunks.append(out.to_ndarray()[0])
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError) as err:
        raise MediaError(f"{path}: corrupt or truncated audio track ({err})") from None
    if not chunks:
        raise MediaError(f"{path}: the audio track decodes to no samples")
    samples = np.concatenate(chunks).astype(np.float32)
    if not ended and wanted is None:
        raise over_limit(path, "decoded duration (s)", round(samples.shape[0] / rate, 1), "max_audio_seconds",
                         limits.max_audio_seconds)
    if ended:
        duration = samples.shape[0] / rate  # decoded whole: the exact length
    return samples, rate, duration


# libsndfile reads a cut-off wav without complaint and only notes it in its diagnostics,
# e.g. "data : 61382 (should be 20431)": the header's sample bytes vs what the file holds.
_TRUNCATED_CHUNK = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


def _read_sound_file(path: str, wanted_s: float | None, limits: MediaLimits,
                     deadline: Deadline) -> tuple[np.ndarray, int, float | None]:
    try:
        info = soundfile.info(path)
        truncated = _TRUNCATED_CHUNK.search(info.extra_info)
        if truncated and int(truncated.group(2)) < int(truncated.group(1)):
            raise MediaError(f"{path}: truncated audio file: header declares {truncated.group(1)} "
                             f"bytes of samples, the file holds {truncated.group(2)}")
        rate = int(info.samplerate)
        _check_stream(path, rate, info.channels, info.frames / rate if rate else None, limits)
        wanted = _frames_wanted(rate, wanted_s)
        chunks = []
        # Block by block, downmixed as read: never more than a second of all channels at once.
        for block in soundfile.blocks(path, blocksize=int(_BLOCK_S * rate), dtype="float32", always_2d=True,
                                      frames=-1 if wanted is None else wanted):
            deadline.check()
            chunks.append(block.mean(axis=1))
    except (soundfile.LibsndfileError, RuntimeError) as err:
        raise MediaError(f"{path}: corrupt or unsupported audio file ({err})") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return samples.astype(np.float32, copy=False), rate, info.frames / rate


def load_audio(
    path: str | os.PathLike, sample_rate: int = 16000, max_seconds: float | None = None,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> tuple[np.ndarray, int | None]:
    """Return ``(mono float32 samples at sample_rate, original length in samples at sample_rate)``.

    Only the first ``max_seconds`` are decoded and returned; the original length comes from
    the header (None when a container's header has no duration and the track goes on past
    ``max_seconds``). Raises ``MediaError`` (``MediaLimitExceeded``, ``DecodeTimeout``).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(f"{path}: file not found")
    kind = sniff_file(path)
    deadline = Deadline(limits.decode_timeout_s, path)
    if kind in SOUND_FILE_FORMATS:
        samples, rate, seconds = _read_sound_file(path, max_seconds, limits, deadline)
    elif (kind in VIDEO_FORMATS or kind in AUDIO_STREAM_FORMATS
          or (kind is None and Path(path).suffix.lower() in _STREAM_SUFFIXES)):
        samples, rate, seconds = _read_container_audio(path, max_seconds, limits, deadline)
    else:
        raise MediaError(f"{path}: not a recognised audio file (its bytes are {kind or 'of no known format'}; "
                         f"expected wav, flac, ogg, mp3, aac or a video/audio container)")
    if samples.size == 0:
        raise MediaError(f"{path}: audio has no samples")
    if not np.all(np.isfinite(samples)):
        raise MediaError(f"{path}: audio contains NaN or infinite samples")
    if rate != sample_rate:
        samples = soxr.resample(samples, rate, sample_rate, quality="HQ")
    original_length = None if seconds is None else round(seconds * sample_rate)
    if max_seconds is not None:
        samples = samples[: int(max_seconds * sample_rate)]
    return np.ascontiguousarray(samples, dtype=np.float32), original_length
