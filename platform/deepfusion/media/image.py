"""Images: decode to RGB uint8 and resize to a square model input."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepfusion.media import MediaError


def decode_image(source: str | os.PathLike | bytes) -> np.ndarray:
    """Decode a whole image file (path or bytes) into an RGB ``uint8`` array ``[H, W, 3]``.

    ``Image.load()`` forces a full decode, so truncated files fail here rather than later.
    """
    name = "<upload>" if isinstance(source, bytes) else str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise MediaError(f"{name}: file not found") from None
    except UnidentifiedImageError:
        raise MediaError(f"{name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as err:  # PIL reports truncation as OSError
        raise MediaError(f"{name}: corrupt or truncated image ({err})") from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] < 2 or array.shape[1] < 2:
        raise MediaError(f"{name}: degenerate image of shape {array.shape}")
    return array


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an RGB ``uint8`` image to ``[size, size, 3]`` (bilinear, antialiased)."""
    if image.shape[:2] == (size, size):
        return image
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_image(source: str | os.PathLike | bytes, size: int) -> np.ndarray:
    return resize_image(decode_image(source), size)
