"""Face-expression recognition on face images with the pretrained FER2013 mini-Xception,
its seven outputs in the task's emotion order (``labels.EMOTIONS``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from deepfusion.labels import EMOTIONS, FER2013_TO_EMOTION


class FaceExpressionClassifier:
    """``[N, H, W, 3]`` uint8 RGB faces -> ``[N, 7]`` probabilities over ``EMOTIONS``."""

    def __init__(self, weights: str | Path, torch_threads: int | None = None):
        from deepfusion.models.face_encoder import FER_CLASSES, load_mini_xception

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.model = load_mini_xception(weights)
        # column i of the output is the FER class that means EMOTIONS[i]
        self.order = [FER_CLASSES.index(fer) for emotion in EMOTIONS
                      for fer, mapped in FER2013_TO_EMOTION.items() if mapped == emotion]

    @torch.no_grad()
    def probabilities(self, faces: np.ndarray) -> np.ndarray:
        from deepfusion.models.face_encoder import fer_input

        images = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float().div_(255.0)
        return self.model(fer_input(images)).softmax(-1)[:, self.order].numpy()
