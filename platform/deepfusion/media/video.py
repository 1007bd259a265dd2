"""Video: OpenCV decode of ``num_frames`` frames sampled uniformly over the clip.

Bounded: the container's header (frame count, frame rate, frame size) is checked against
``MediaLimits`` before any frame is decoded; a clip whose header has no frame count is
read for at most ``max_video_frames`` frames; every frame checks the decoding deadline.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from deepfusion.config import MediaLimits
from deepfusion.media import MediaError
from deepfusion.media.formats import VIDEO_FORMATS, sniff_file
from deepfusion.media.limits import DEFAULT_LIMITS, Deadline, over_limit

# Container headers may overstate the frame count by a few frames (MKV and AVI headers
# estimate it from the duration); a clip that decodes fewer than this fraction of what its
# header promises, and more than that many frames fewer, is treated as truncated.
_MIN_DECODED_FRACTION = 0.9
_HEADER_SLACK_FRAMES = 2


def sample_frame_indices(total_frames: int, num_frames: int) -> np.ndarray:
    """``num_frames`` indices spread uniformly over ``[0, total_frames)``, first and last included.

    Short clips repeat frames rather than fail: a 5-frame clip still yields 8 frames.
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    return np.linspace(0, total_frames - 1, num_frames).round().astype(np.int64)


def _to_rgb(frame: np.ndarray, size: int) -> np.ndarray:
    frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def decode_video(path: str | os.PathLike, num_frames: int, size: int,
                 limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode ``num_frames`` RGB frames resized to ``size`` x ``size``: ``uint8 [T, size, size, 3]``.

    Raises ``MediaError`` (``MediaLimitExceeded`` over a cap, ``DecodeTimeout`` past the deadline).
    """
    return np.stack(_decode(path, num_frames, lambda frame: _to_rgb(frame, size), limits))


def decode_video_faces(path: str | os.PathLike, num_frames: int, size: int, margin: float,
                       cascade: str | None = None,
                       limits: MediaLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, np.ndarray]:
    """``decode_video``'s frames, each cropped to its largest face (``media.faces``), and
    a bool per frame: whether a face was found (a frame without one stays whole)."""
    from deepfusion.media.faces import crop_face

    # Frames are kept at full resolution only for the few sampled by index; a header without
    # a frame count makes every frame a candidate, kept at ``size`` on the longer side.
    raw = _decode(path, num_frames, None, limits, lambda frame: _shrink(frame, size))
    crops = [crop_face(frame, margin, cascade) for frame in raw]
    return np.stack([_to_rgb(crop, size) for crop, _ in crops]), np.array([found for _, found in crops])


def _shrink(frame: np.ndarray, size: int) -> np.ndarray:
    scale = size / max(frame.shape[:2])
    if scale >= 1:
        return frame
    return cv2.resize(frame, (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)


def _decode(path, num_frames: int, prepare, limits: MediaLimits, prepare_each=None) -> list[np.ndarray]:
    """The ``num_frames`` sampled frames, each through ``prepare`` (None: as decoded, BGR);
    ``prepare_each`` (default ``prepare``) bounds what a header-less video keeps per frame."""
    prepare = prepare or (lambda frame: frame)
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(f"{path}: file not found")
    kind = sniff_file(path)
    if kind not in VIDEO_FORMATS:
        raise MediaError(f"{path}: not a video container (its bytes are {kind or 'of no known format'}; "
                         f"expected one of {sorted(VIDEO_FORMATS)})")
    deadline = Deadline(limits.decode_timeout_s, path)
    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise MediaError(f"{path}: OpenCV cannot open this file as video")
        header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        _check_header(path, capture, header_count, limits)
        if header_count > 0:
            return _decode_by_index(capture, path, header_count, num_frames, prepare, limits, deadline)
        return _decode_up_to_cap_then_sample(capture, path, num_frames, prepare_each or prepare, limits, deadline)
    finally:
        capture.release()


def _check_header(path: str, capture, header_count: int, limits: MediaLimits) -> None:
    width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps = capture.get(cv2.CAP_PROP_FPS)
    if width * height > limits.max_frame_pixels:
        raise over_limit(path, f"frame size {width}x{height}: pixels", width * height,
                         "max_frame_pixels", limits.max_frame_pixels)
    if header_count > limits.max_video_frames:
        raise over_limit(path, "frame count", header_count, "max_video_frames", limits.max_video_frames)
    if header_count > 0 and fps > 0 and header_count / fps > limits.max_video_seconds:
        raise over_limit(path, "duration (s)", round(header_count / fps, 1), "max_video_seconds",
                         limits.max_video_seconds)


def _checked(path: str, frame: np.ndarray, limits: MediaLimits) -> np.ndarray:
    """A decoded frame, refused if larger than the header said (or than the cap)."""
    if frame.shape[0] * frame.shape[1] > limits.max_frame_pixels:
        raise over_limit(path, f"frame size {frame.shape[1]}x{frame.shape[0]}: pixels",
                         frame.shape[0] * frame.shape[1], "max_frame_pixels", limits.max_frame_pixels)
    return frame


def _decode_by_index(capture, path: str, header_count: int, num_frames: int, prepare,
                     limits: MediaLimits, deadline: Deadline):
    wanted = sample_frame_indices(header_count, num_frames)
    wanted_set = set(wanted.tolist())
    picked: dict[int, np.ndarray] = {}
    last_needed = int(wanted[-1])
    decoded = 0
    last_frame = None
    while decoded <= last_needed:
        deadline.check()
        if not capture.grab():
            break
        if decoded in wanted_set:
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                raise MediaError(f"{path}: frame {decoded} could not be decoded")
            last_frame = picked[decoded] = prepare(_checked(path, frame, limits))
        decoded += 1
    if decoded == 0 or last_frame is None:
        raise MediaError(f"{path}: no decodable video frames (corrupt or truncated)")
    if decoded < min(_MIN_DECODED_FRACTION * header_count, header_count - _HEADER_SLACK_FRAMES):
        raise MediaError(
            f"{path}: truncated video: header announces {header_count} frames, "
            f"only {decoded} decode"
        )
    # A header that overstates the count by a frame or two: hold the last real frame.
    return [picked.get(int(i), last_frame) for i in wanted]


def _decode_up_to_cap_then_sample(capture, path: str, num_frames: int, prepare,
                                  limits: MediaLimits, deadline: Deadline):
    """A header without a frame count: read at most ``max_video_frames`` (small, resized)
    frames; a clip that has more is over the cap."""
    frames = []
    while True:
        deadline.check()
        ok, frame = capture.read()
        if not ok:
            break
        if len(frames) == limits.max_video_frames:
            raise over_limit(path, "frame count (header gives none; read so far)", len(frames) + 1,
                             "max_video_frames", limits.max_video_frames)
        frames.append(prepare(_checked(path, frame, limits)))
    if not frames:
        raise MediaError(f"{path}: no decodable video frames (corrupt or truncated)")
    return [frames[int(i)] for i in sample_frame_indices(len(frames), num_frames)]
