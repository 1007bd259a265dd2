"""Image augmentation: the offline copies that top classes up to a balanced count, and the
same transforms applied on the fly to training batches.

Geometric (rotation, scale, translation, flip), photometric (brightness, contrast,
saturation), Gaussian noise, and random crop with zero padding, all from
``torchvision.transforms.v2``. Each augmented copy is a pure function of
``(seed, source path, copy index)``, so re-running a job reproduces it bit for bit. In
training (``BatchAugmentation``) each image of a batch draws its own transform from torch's
global generator, which the training loop seeds per epoch: fresh draws every epoch, the
same draws when a run is repeated or resumed.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from deepfusion.config import AugmentConfig
from deepfusion.hashing import seed_from


def build_augmentation(cfg: AugmentConfig, size: int | tuple[int, int]) -> v2.Compose:
    return v2.Compose([
        v2.RandomAffine(degrees=cfg.rotation_degrees, translate=(cfg.translate, cfg.translate),
                        scale=cfg.scale),
        v2.RandomHorizontalFlip(p=cfg.hflip_p),
        v2.ColorJitter(brightness=cfg.brightness, contrast=cfg.contrast, saturation=cfg.saturation),
        v2.RandomCrop(size, padding=int(round(cfg.crop_pad_fraction * min(_pair(size)))), fill=0),
        v2.ToDtype(torch.float32, scale=True),
        v2.GaussianNoise(sigma=cfg.noise_sigma, clip=True),
    ])


def copy_seed(seed: int, source: str, copy_index: int) -> int:
    return seed_from(seed, source, copy_index)


def augment_image(image: np.ndarray, transform: v2.Compose, seed: int) -> np.ndarray:
    """Apply ``transform`` to an RGB ``uint8 [H, W, 3]`` image under its own RNG seed."""
    tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)  # CHW uint8, writable
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = transform(v2.functional.to_image(tensor))
    return (out.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


class BatchAugmentation:
    """Training-time augmentation: ``[B, 3, H, W]`` float images in [0, 1], each image through
    its own draw of the transforms (a v2 transform given the whole batch would draw once and
    move every image alike)."""

    def __init__(self, cfg: AugmentConfig):
        self.cfg = cfg
        self._transforms: dict[tuple[int, int], v2.Compose] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        transform = self._transforms.get(size)
        if transform is None:
            transform = self._transforms[size] = build_augmentation(self.cfg, size)
        return torch.stack([transform(image) for image in images]).clamp_(0, 1)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size
