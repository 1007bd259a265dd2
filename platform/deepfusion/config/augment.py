"""Image augmentation settings: the class-balancing copies (preprocess) and the training-time
transforms (train) use the same ones."""

from __future__ import annotations

from pydantic import Field

from deepfusion.config.base import StrictModel


class AugmentConfig(StrictModel):
    """Geometric, photometric and noise transforms (torchvision.transforms.v2): the copies that
    balance the image classes offline, and, per epoch, the train split's images in training."""

    rotation_degrees: float = Field(20.0, ge=0, le=180)
    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = Field(0.10, ge=0, le=0.5)
    hflip_p: float = Field(0.5, ge=0, le=1)
    brightness: float = Field(0.3, ge=0)
    contrast: float = Field(0.3, ge=0)
    saturation: float = Field(0.3, ge=0)
    noise_sigma: float = Field(0.03, ge=0, le=1)
    # Random crop of this fraction of the side, then zero-padding back to size.
    crop_pad_fraction: float = Field(0.10, ge=0, lt=0.5)
