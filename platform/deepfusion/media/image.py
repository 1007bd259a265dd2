"""Images: decode to RGB uint8 and resize to a square model input.

Bounded: the format must be one of ``limits.image_formats`` and the pixel count (read
from the header, before decoding) at most ``limits.max_image_pixels``; PIL's own
decompression-bomb guard refuses far larger ones already when the file is opened.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepfusion.config import MediaLimits
from deepfusion.media import MediaError, MediaLimitExceeded
from deepfusion.media.formats import HEAD_BYTES, IMAGE_FORMATS, sniff, sniff_file
from deepfusion.media.limits import DEFAULT_LIMITS, over_limit


def decode_image(source: str | os.PathLike | bytes, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode a whole image file (path or bytes) into an RGB ``uint8`` array ``[H, W, 3]``.

    ``Image.load()`` forces a full decode, so truncated files fail here rather than later.
    Raises ``MediaError`` (``MediaLimitExceeded`` for a size over ``limits``).
    """
    name = "<upload>" if isinstance(source, bytes) else str(source)
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                         formats=list(limits.image_formats))
        with img:
            width, height = img.size
            if width * height > limits.max_image_pixels:
                raise over_limit(name, f"image size {width}x{height}: pixels", width * height,
                                 "max_image_pixels", limits.max_image_pixels)
            img.load()
            rgb = img.convert("RGB")
    except MediaError:
        raise
    except FileNotFoundError:
        raise MediaError(f"{name}: file not found") from None
    except Image.DecompressionBombError:  # PIL's own guard, at open: far past any sane cap
        raise MediaLimitExceeded(f"{name}: image size is over the limit of {limits.max_image_pixels:,} pixels "
                                 f"(limits.max_image_pixels)", "max_image_pixels") from None
    except UnidentifiedImageError:
        kind = sniff(source[:HEAD_BYTES]) if isinstance(source, bytes) else sniff_file(source)
        if kind not in IMAGE_FORMATS:
            raise MediaError(f"{name}: not a recognised image format") from None
        if IMAGE_FORMATS[kind] not in limits.image_formats:
            raise MediaError(f"{name}: a {kind} image; accepted formats are {', '.join(limits.image_formats)} "
                             f"(limits.image_formats)") from None
        raise MediaError(f"{name}: corrupt {kind} image (its header cannot be read)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # PIL reports truncation as OSError
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


def load_image(source: str | os.PathLike | bytes, size: int, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    return resize_image(decode_image(source, limits), size)
