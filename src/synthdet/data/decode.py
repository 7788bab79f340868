"""Turn any image file Pillow can read into an RGB uint8 array, or say exactly why not.

Every failure is an :class:`ImageDecodeError` carrying the path and a short reason, so
batch jobs can log it (``skipped.csv``) and go on with the other files.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default ceiling on decoded pixels. Above it a JPEG is decoded at a reduced DCT scale
#: (Pillow draft mode) and anything else is refused, so one panorama cannot exhaust a
#: worker's memory. 100 MP is about 300 MB of RGB.
DEFAULT_MAX_PIXELS = 100_000_000

# Our own limit replaces Pillow's global decompression-bomb guard (which would otherwise
# warn at 89 MP and fail at 179 MP before we could choose draft mode).
Image.MAX_IMAGE_PIXELS = None


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; ``str()`` names the file and the problem."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class DecodedImage:
    """Pixels plus what decoding had to do to them (reported, never silent)."""

    pixels: np.ndarray  # H x W x 3, uint8
    original_size: tuple[int, int]  # (width, height) as stored in the file
    reduced_by: int = 1  # JPEG draft scale factor used for very large images


def image_extensions() -> frozenset[str]:
    """File extensions Pillow can open here (lower case, with dot)."""
    return frozenset(ext.lower() for ext in Image.registered_extensions())


def load_image(source: str | os.PathLike | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> DecodedImage:
    """Decode a file (path or binary file object) to RGB uint8 with EXIF orientation applied.

    Raises :class:`ImageDecodeError`, naming ``name`` (default: the path), for empty,
    unreadable, truncated or oversized files.
    """
    if hasattr(source, "read"):
        path = name or "<upload>"
        size = source.seek(0, io.SEEK_END)
        source.seek(0)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from exc
        source = path
    if size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-transparency notices
            with Image.open(source) as img:
                return _decode_opened(img, max_pixels, path)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(path, "not an image Pillow can identify") from exc
    except OSError as exc:
        message = str(exc)
        if "truncated" in message or "broken data stream" in message:
            raise ImageDecodeError(path, f"truncated or corrupt image data ({message})") from exc
        raise ImageDecodeError(path, f"cannot decode ({message})") from exc
    except (ValueError, SyntaxError, MemoryError) as exc:
        raise ImageDecodeError(path, f"cannot decode ({type(exc).__name__}: {exc})") from exc


def decode_pil(img: Image.Image, name: str = "<image>", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Same conversion as :func:`load_image` for an already opened PIL image."""
    return _decode_opened(img, max_pixels, name)


def _decode_opened(img: Image.Image, max_pixels: int, path) -> DecodedImage:
    original = img.size
    reduced_by = 1
    pixels = original[0] * original[1]
    if pixels > max_pixels:
        if img.format != "JPEG":
            raise ImageDecodeError(
                path, f"too large: {original[0]}x{original[1]} exceeds the {max_pixels:,}-pixel limit"
            )
        reduced_by = _draft_scale(original, max_pixels)
        img.draft("RGB", (original[0] // reduced_by, original[1] // reduced_by))
    img.load()
    img = ImageOps.exif_transpose(img)
    return DecodedImage(pixels=to_rgb_array(img), original_size=original, reduced_by=reduced_by)


def _draft_scale(size: tuple[int, int], max_pixels: int) -> int:
    """Smallest JPEG DCT scale (1, 2, 4, 8) that brings the image under ``max_pixels``."""
    for scale in (2, 4, 8):
        if (size[0] // scale) * (size[1] // scale) <= max_pixels:
            return scale
    return 8


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to an H x W x 3 uint8 array.

    16- and 32-bit integer modes are scaled by their bit depth (Pillow's own ``convert``
    would clip them at 255); alpha is dropped, keeping the stored colour values.
    """
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.int64)
        shift = 8 if arr.max(initial=0) <= 0xFFFF else 24
        gray = np.clip(arr >> shift, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        gray = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)
