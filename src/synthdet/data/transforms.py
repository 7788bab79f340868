"""Pixel-level transforms applied in the loader workers, on uint8 H x W x 3 arrays.

Crops never resample: the forensic signal is in the highest frequencies, and any resize
(up or down) rewrites exactly those. Images smaller than the crop are therefore padded,
not upscaled (see :func:`pad_to_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from synthdet.config import AugmentConfig
from synthdet.data.augment import RandomAugment, resize_to


def pad_to_size(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad an image that is smaller than ``height`` x ``width`` (no-op otherwise).

    Why reflect padding rather than running small images at native size: the network,
    its normalization statistics and an exported ONNX graph all see one fixed input size,
    so batches stay uniform and the spectrum has the same frequency grid as in training.
    Why not zero padding: a hard border adds a strong cross to the Fourier spectrum.
    Why not upscaling: interpolation low-passes the image and invents the very
    regularities an up-sampling detector looks for. Mirroring keeps every original
    pixel and its local high-frequency content intact; both classes go through the
    same rule, and results on padded images are flagged so nobody mistakes them for
    full-resolution evidence.
    """
    h, w = pixels.shape[:2]
    pad_h, pad_w = max(0, height - h), max(0, width - w)
    if not pad_h and not pad_w:
        return pixels
    # numpy's reflect mode repeats the reflection as often as needed, so even a
    # 32x32 image fills a 640x480 crop.
    return np.pad(
        pixels,
        ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        mode="reflect" if min(h, w) > 1 else "edge",
    )


def center_box(image_height: int, image_width: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the centre crop within the image (all of a shorter side)."""
    top, left = max(0, (image_height - height) // 2), max(0, (image_width - width) // 2)
    return top, left, min(height, image_height), min(width, image_width)


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centre ``height`` x ``width``; a side shorter than that is padded (after cutting, so
    a 1 x 5,000,000 image never becomes a padded copy of itself)."""
    top, left, _, _ = center_box(*pixels.shape[:2], height, width)
    return pad_to_size(pixels[top : top + height, left : left + width], height, width)


def random_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Uniform random crop drawn from torch's RNG (seeded per loader worker); short sides padded."""
    h, w = pixels.shape[:2]
    top = int(torch.randint(0, max(h, height) - height + 1, ()).item())
    left = int(torch.randint(0, max(w, width) - width + 1, ()).item())
    return pad_to_size(pixels[top : top + height, left : left + width], height, width)


@dataclass(frozen=True)
class EvalTransform:
    """Deterministic center crop (padding small images)."""

    crop: tuple[int, int]

    @property
    def cache_key(self) -> str:
        return f"crop{self.crop[0]}x{self.crop[1]}"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return center_crop(pixels, *self.crop)


class TrainTransform:
    """Random crop (optionally of a rescaled region), flips, then blur / noise / JPEG."""

    def __init__(self, crop: tuple[int, int], augment: AugmentConfig | None = None):
        self.crop = crop
        self.augment = augment or AugmentConfig()
        self.random_augment = RandomAugment(self.augment)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        height, width = self.crop
        factor = self.random_augment.rescale_factor()
        if factor is None:
            pixels = random_crop(pixels, height, width)
        else:
            # Crop the region that becomes the crop after rescaling: cheap for huge images.
            region = random_crop(pixels, max(1, round(height / factor)), max(1, round(width / factor)))
            pixels = resize_to(region, height, width)
        if torch.rand(()) < self.augment.hflip:
            pixels = pixels[:, ::-1]
        if torch.rand(()) < self.augment.vflip:
            pixels = pixels[::-1]
        return self.random_augment(np.ascontiguousarray(pixels))
