"""A synthetic image-folder set with the seed's class imbalance (698/537/474, scaled).

Three procedurally drawn scene types stand in for the textile classes, with shared
clutter so that they are learnable but not trivially separable:
clothes_dump (a heap of fabric patches), textile_dye (dyed, rippling water),
textile_billboard (a signboard with lines of "text").
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from deepfusion.config import DemoDataConfig

SEED_CLASS_SIZES = {"clothes_dump": 698, "textile_dye": 537, "textile_billboard": 474}


def _clothes_dump(size: int, rng: np.random.Generator) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = rng.integers(90, 160, 3)  # ground
    for _ in range(int(rng.integers(25, 45))):
        centre = (int(rng.integers(0, size)), int(rng.integers(size // 3, size)))
        axes = (int(rng.integers(size // 16, size // 6)), int(rng.integers(size // 20, size // 8)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360,
                    rng.integers(0, 256, 3).tolist(), -1)
    return image


def _textile_dye(size: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / size
    dye = rng.integers(0, 256, 3)
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(2, 5) * y + 0.6 * np.sin(2 * np.pi * rng.uniform(1, 3) * x)))
    water = np.array([60, 90, 110])
    image = water * (1 - waves[..., None]) + dye * waves[..., None]
    return image.astype(np.uint8)


def _textile_billboard(size: int, rng: np.random.Generator) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[: size // 2] = rng.integers(150, 230, 3)  # sky
    image[size // 2 :] = rng.integers(60, 110, 3)  # street
    x0, y0 = int(rng.integers(2, size // 5)), int(rng.integers(2, size // 5))
    x1, y1 = int(rng.integers(size * 3 // 5, size - 2)), int(rng.integers(size // 2, size * 4 // 5))
    cv2.rectangle(image, (x0, y0), (x1, y1), rng.integers(0, 256, 3).tolist(), -1)
    for line_y in range(y0 + 6, y1 - 4, max(6, (y1 - y0) // 6)):
        cv2.line(image, (x0 + 5, line_y), (x0 + 5 + int(rng.integers((x1 - x0) // 3, x1 - x0 - 8)), line_y),
                 rng.integers(0, 256, 3).tolist(), 2)
    return image


DRAW = {"clothes_dump": _clothes_dump, "textile_dye": _textile_dye, "textile_billboard": _textile_billboard}


def write_image_corpus(cfg: DemoDataConfig, root: Path) -> dict[str, int]:
    """Write ``root/<class>/img_NNNN.{jpg,png}``; returns the count per class."""
    rng = np.random.default_rng(cfg.seed)
    counts = {}
    for label_name, seed_size in SEED_CLASS_SIZES.items():
        folder = root / label_name
        folder.mkdir(parents=True, exist_ok=True)
        counts[label_name] = max(1, round(seed_size * cfg.image_scale))
        for i in range(counts[label_name]):
            image = DRAW[label_name](cfg.image_size, rng)
            # Shared clutter: a random occluding bar and sensor noise on every class.
            bar = rng.integers(0, cfg.image_size, 2)
            cv2.rectangle(image, tuple(int(v) for v in bar), tuple(int(v) + cfg.image_size // 6 for v in bar),
                          rng.integers(0, 256, 3).tolist(), -1)
            image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
            suffix = ".png" if i % 5 == 0 else ".jpg"  # both formats, as real folders have
            cv2.imwrite(str(folder / f"img_{i:04d}{suffix}"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return counts
