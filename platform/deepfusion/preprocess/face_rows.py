"""Face photos -> face crops at the FER network's input size, as a Ray Data UDF."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from deepfusion.config import MediaLimits
from deepfusion.media.faces import crop_face, load_cascade
from deepfusion.media.image import decode_image
from deepfusion.preprocess.quarantine import decode_failure, report
from deepfusion.sources import Quarantined

FACE_SIZE = 64  # mini-Xception's input


class FacePhotoDecoder:
    """Decode each photo (within ``limits``), crop its largest face (or keep it whole, and
    say so), resize to 64x64 RGB. A file that fails to decode is reported to
    ``quarantine`` with the reason and left out; the batch goes on."""

    def __init__(self, face_crop: bool, face_margin: float, face_cascade: str | None, limits: MediaLimits,
                 quarantine):
        cv2.setNumThreads(1)
        self.face_crop, self.face_margin, self.cascade = face_crop, face_margin, face_cascade
        self.limits, self.quarantine = limits, quarantine
        if face_crop:  # a missing detector is the job's error, not every photo's
            load_cascade(face_cascade)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        kept, faces, found, rejected = [], [], [], []
        for i, path in enumerate(batch["path"]):
            try:
                bgr = cv2.cvtColor(decode_image(path, self.limits), cv2.COLOR_RGB2BGR)
            except Exception as err:  # noqa: BLE001 - any decoder failure is this file's, not the job's
                rejected.append(Quarantined(path, decode_failure(err), stage="decode"))
                continue
            crop, has_face = crop_face(bgr, self.face_margin, self.cascade) if self.face_crop else (bgr, False)
            face = cv2.resize(crop, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
            kept.append(i)
            faces.append(cv2.cvtColor(face, cv2.COLOR_BGR2RGB).tobytes())
            found.append(has_face)
        report(self.quarantine, rejected)
        out = batch.iloc[kept].reset_index(drop=True)
        return out.assign(face=faces, face_found=np.array(found, dtype=bool))


def faces_from_bytes(blobs) -> np.ndarray:
    return np.stack([np.frombuffer(b, dtype=np.uint8).reshape(FACE_SIZE, FACE_SIZE, 3) for b in blobs])
