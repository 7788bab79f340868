"""Turn any image file Pillow can read into an RGB uint8 array, or say exactly why not.

Every failure is an :class:`ImageDecodeError` carrying the path and a short reason, so
batch jobs can log it (``skipped.csv``) and go on with the other files.

Memory is bounded by one pixel budget, :data:`DEFAULT_MAX_PIXELS`, checked from the
header before any pixel is decoded, on the size that will actually be decoded: a larger
JPEG is decoded at a reduced DCT scale when that brings it under, anything else is
refused. A file too short to hold the image its header describes is refused too, since
a decoder would fill the missing part with grey (see :func:`_minimum_file_size`).
"""

from __future__ import annotations

import io
import math
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: The pixel budget: the most pixels synthdet decodes from one image, in every entry point
#: (predict, evaluate, train, the service). Decoding peaks at about 8 bytes per pixel
#: (Pillow's 4-byte copy, the 3-byte array, a rotated copy for EXIF orientation), so one
#: ``synthdet predict`` of any file stays under 500 MB: 457-471 MB measured for the worst
#: files at the budget (README, "Limits"). A 5472x3648 camera photo decodes at full
#: resolution, a 6000x4000 one at half scale.
DEFAULT_MAX_PIXELS = 20_000_000

#: Rows are converted to RGB this many pixels at a time: converting a whole image at once
#: holds Pillow's copy, the converted copy and numpy's at the same time.
STRIP_PIXELS = 1 << 20

# Our own limit replaces Pillow's global decompression-bomb guard (which would otherwise
# warn at 89 MP and fail at 179 MP before we could choose draft mode).
Image.MAX_IMAGE_PIXELS = None

#: Leading bytes of formats a damaged file still announces: Pillow cannot open such a
#: file, but it is a corrupt image, not "not an image".
SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF87a": "GIF", b"GIF89a": "GIF",
              b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"RIFF": "WebP"}


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
    unreadable, truncated, corrupt or oversized files.
    """
    source, path, size = _file(source, name)
    with _decode_errors(path, source), _open(source) as img:
        return _decode_opened(img, max_pixels, path, size)


def check_image(source: str | os.PathLike | BinaryIO, max_pixels: int = DEFAULT_MAX_PIXELS,
                name: str | None = None) -> tuple[int, int]:
    """The checks :func:`load_image` makes before decoding, from the header alone (cheap).

    Returns the stored (width, height); raises :class:`ImageDecodeError` for a file that
    :func:`load_image` would refuse without decoding a pixel (data corrupt beyond the
    header is found only by decoding).
    """
    source, path, size = _file(source, name)
    with _decode_errors(path, source), _open(source) as img:
        _plan(img, max_pixels, path, size)
        return img.size


def decode_pil(img: Image.Image, name: str = "<image>", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Same conversion as :func:`load_image` for an already opened PIL image."""
    with _decode_errors(name):
        return _decode_opened(img, max_pixels, name, owned=False)


def _file(source, name: str | None):
    """(source to open, name for messages, size in bytes); an empty or unreadable file is refused here."""
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
    return source, path, size


@contextmanager
def _open(source):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. palette-transparency notices
        with Image.open(source) as img:
            yield img


@contextmanager
def _decode_errors(path, source=None):
    """Pillow's many exception types as one :class:`ImageDecodeError` with a short reason."""
    try:
        yield
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        claimed = _claimed_format(source)
        if claimed:
            raise ImageDecodeError(path, f"corrupt {claimed} file (Pillow cannot open it)") from exc
        raise ImageDecodeError(path, "not an image Pillow can identify") from exc
    except OSError as exc:
        message = str(exc)
        if "truncated" in message or "broken data stream" in message:
            raise ImageDecodeError(path, f"truncated or corrupt image data ({message})") from exc
        raise ImageDecodeError(path, f"cannot decode ({message})") from exc
    except Exception as exc:  # untrusted bytes: a plugin may raise anything (SyntaxError, struct.error...)
        raise ImageDecodeError(path, f"cannot decode ({type(exc).__name__}: {exc})") from exc


def _claimed_format(source) -> str | None:
    """The format whose signature ``source`` starts with, if any."""
    if source is None:
        return None
    try:
        if hasattr(source, "read"):
            source.seek(0)
            head = source.read(16)
        else:
            with open(source, "rb") as fh:
                head = fh.read(16)
    except OSError:
        return None
    for signature, name in SIGNATURES.items():
        if head.startswith(signature) and (name != "WebP" or head[8:12] == b"WEBP"):
            return name
    return None


def _decode_opened(img: Image.Image, max_pixels: int, path, file_size: int | None = None,
                   owned: bool = True) -> DecodedImage:
    """Decode within the budget; ``owned=False`` leaves the caller's image as it was (at the cost of a copy)."""
    original = img.size
    reduced_by = _plan(img, max_pixels, path, file_size)
    if reduced_by > 1:
        img.draft("RGB", (original[0] // reduced_by, original[1] // reduced_by))
    if img.size[0] * img.size[1] > max_pixels:  # an already loaded image cannot be drafted
        raise ImageDecodeError(path, _too_large(img.size, max_pixels))
    img.load()
    if owned:
        ImageOps.exif_transpose(img, in_place=True)  # no second copy of the pixels
    else:
        img = ImageOps.exif_transpose(img)
    return DecodedImage(pixels=to_rgb_array(img), original_size=original, reduced_by=reduced_by)


def _plan(img: Image.Image, max_pixels: int, path, file_size: int | None) -> int:
    """The JPEG draft scale (1: none) that brings ``img`` within the budget; refuses what nothing can.

    A progressive JPEG keeps every DCT coefficient of the full image in memory at any
    scale (2 bytes per sample, up to 8 per pixel), so it counts twice at its stored size.
    """
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageDecodeError(path, f"no pixels ({width}x{height})")
    if file_size is not None and file_size < _minimum_file_size(img):
        raise ImageDecodeError(
            path, f"corrupt or truncated: {file_size:,} bytes cannot hold a {width}x{height} {img.format} "
                  "(a decoder would fill most of it with grey)")
    progressive = img.format == "JPEG" and bool(img.info.get("progressive") or img.info.get("progression"))
    if progressive and 2 * width * height > max_pixels:
        raise ImageDecodeError(path, _too_large(img.size, max_pixels // 2, "for a progressive JPEG, decoded whole "
                                                                          "at any scale: half the budget"))
    if width * height <= max_pixels:
        return 1
    if img.format == "JPEG":
        for scale in (2, 4, 8):
            if (width // scale) * (height // scale) <= max_pixels:
                return scale
        raise ImageDecodeError(path, _too_large(img.size, max_pixels, "even at 1/8 scale"))
    raise ImageDecodeError(path, _too_large(img.size, max_pixels))


def _too_large(size: tuple[int, int], max_pixels: int, detail: str = "") -> str:
    return f"too large: {size[0]}x{size[1]} exceeds the {max_pixels:,}-pixel limit" + (f" ({detail})" if detail else "")


def _minimum_file_size(img: Image.Image) -> int:
    """Fewer bytes than any complete file of this format and size can have (0: no bound known).

    A JPEG's Huffman-coded data spends at least one bit on each 8x8 block's DC term;
    PNG's deflate compresses at most 1032:1, and each row holds a filter byte and at least
    one bit per pixel. Both bounds are halved for a margin, so only a file missing most
    of its data (or a header stuck on garbage) falls below.
    """
    width, height = img.size
    if img.format == "JPEG":
        return math.ceil(width / 8) * math.ceil(height / 8) // 16
    if img.format == "PNG":
        return height * (1 + math.ceil(width / 8)) // 2064
    return 0


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to an H x W x 3 uint8 array, converted a strip of rows at a time.

    16- and 32-bit integer modes are scaled by their bit depth (Pillow's own ``convert``
    would clip them at 255); alpha is dropped, keeping the stored colour values.
    """
    width, height = img.size
    convert = _strip_converter(img)
    rows = max(1, STRIP_PIXELS // width)
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, rows):
        pixels[top : top + rows] = convert(img.crop((0, top, width, min(height, top + rows))))
    return pixels


def _strip_converter(img: Image.Image):
    """Strip -> RGB uint8 array; scales of 16-bit and float modes come from the whole image."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        shift = 8 if img.getextrema()[1] <= 0xFFFF else 24
        return lambda strip: _gray_to_rgb(np.clip(np.asarray(strip) >> shift, 0, 255))
    if img.mode == "F":
        scale = 255.0 if img.getextrema()[1] <= 1.0 else 1.0
        return lambda strip: _gray_to_rgb(np.clip(np.asarray(strip, dtype=np.float32) * scale, 0, 255).round())
    if img.mode == "P" and "transparency" in img.info:
        return lambda strip: np.asarray(strip.convert("RGBA").convert("RGB"))
    return lambda strip: np.asarray(strip if strip.mode == "RGB" else strip.convert("RGB"))


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray.astype(np.uint8)[..., None], 3, axis=2)
