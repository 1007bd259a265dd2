"""Video: OpenCV decode of ``num_frames`` frames sampled uniformly over the clip."""

from __future__ import annotations

import os

import cv2
import numpy as np

from deepfusion.media import MediaError

# Container headers may overstate the frame count by a few frames; a clip that decodes
# fewer than this fraction of what its header promises is treated as truncated.
_MIN_DECODED_FRACTION = 0.9


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


def decode_video(path: str | os.PathLike, num_frames: int, size: int) -> np.ndarray:
    """Decode ``num_frames`` RGB frames resized to ``size`` x ``size``: ``uint8 [T, size, size, 3]``."""
    path = str(path)
    if not os.path.isfile(path):
        raise MediaError(f"{path}: file not found")
    capture = cv2.VideoCapture(path)
    try:
        if not capture.isOpened():
            raise MediaError(f"{path}: OpenCV cannot open this file as video")
        header_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if header_count > 0:
            frames = _decode_by_index(capture, path, header_count, num_frames, size)
        else:
            frames = _decode_all_then_sample(capture, path, num_frames, size)
    finally:
        capture.release()
    return np.stack(frames)


def _decode_by_index(capture, path: str, header_count: int, num_frames: int, size: int):
    wanted = sample_frame_indices(header_count, num_frames)
    wanted_set = set(wanted.tolist())
    picked: dict[int, np.ndarray] = {}
    last_needed = int(wanted[-1])
    decoded = 0
    last_frame = None
    while decoded <= last_needed:
        if not capture.grab():
            break
        if decoded in wanted_set:
            ok, frame = capture.retrieve()
            if not ok or frame is None:
                raise MediaError(f"{path}: frame {decoded} could not be decoded")
            last_frame = picked[decoded] = _to_rgb(frame, size)
        decoded += 1
    if decoded == 0 or last_frame is None:
        raise MediaError(f"{path}: no decodable video frames (corrupt or truncated)")
    if decoded < _MIN_DECODED_FRACTION * header_count:
        raise MediaError(
            f"{path}: truncated video: header announces {header_count} frames, "
            f"only {decoded} decode"
        )
    # A header that overstates the count by a frame or two: hold the last real frame.
    return [picked.get(int(i), last_frame) for i in wanted]


def _decode_all_then_sample(capture, path: str, num_frames: int, size: int):
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(_to_rgb(frame, size))
    if not frames:
        raise MediaError(f"{path}: no decodable video frames (corrupt or truncated)")
    return [frames[int(i)] for i in sample_frame_indices(len(frames), num_frames)]
