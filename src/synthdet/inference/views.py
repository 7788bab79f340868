"""Views: how a decoded image becomes the crops a model scores.

A checkpoint may carry its view (:class:`~synthdet.config.ViewConfig`); the Detector uses
it for prediction and evaluation alike, so the numbers of both agree with validation.
Each view transform has a ``cache_key`` naming exactly what it does to the pixels: the
embedding cache stores a frozen backbone's outputs under it.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from synthdet.config import AugmentConfig, ViewConfig
from synthdet.data.augment import RandomAugment, rescale, resize_to
from synthdet.data.transforms import EvalTransform, center_crop
from synthdet.inference.tiles import TileTransform

#: Overlap between neighbouring tiles of a ``tiles`` view (predict's own tiling has a flag for it).
VIEW_TILE_OVERLAP = 0.25
#: Context kept around a center crop before a filter or JPEG block grid is applied to it.
MARGIN = 16


@dataclass(frozen=True)
class ResizeTransform:
    """Shorter side to the crop size (bicubic, antialiased), then a center crop: CLIP's preprocessing."""

    crop: tuple[int, int]

    @property
    def cache_key(self) -> str:
        return f"resize{self.crop[0]}x{self.crop[1]}"

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        height, width = pixels.shape[:2]
        scale = max(self.crop[0] / height, self.crop[1] / width)
        resized = resize_to(pixels, max(self.crop[0], round(height * scale)), max(self.crop[1], round(width * scale)))
        return center_crop(resized, *self.crop)


def make_view(view: ViewConfig, crop: tuple[int, int]):
    """The loader transform of ``view`` at the model's crop size."""
    if view.mode == "resize":
        return ResizeTransform(crop)
    if view.mode == "tiles":
        return TileTransform(crop, VIEW_TILE_OVERLAP, view.tiles)
    return EvalTransform(crop)


def needs_whole_image(transform) -> bool:
    """Whether the view looks beyond a center crop (so a perturbation must cover the whole image)."""
    return not isinstance(transform, EvalTransform)


def center_region(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """The centered ``height`` x ``width`` part of an image (all of it when smaller)."""
    h, w = pixels.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return np.ascontiguousarray(pixels[top : top + height, left : left + width])


def random_region(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """A ``height`` x ``width`` part at a random position (torch's generator; all of it when smaller)."""
    h, w = pixels.shape[:2]
    top = int(torch.randint(0, max(1, h - height + 1), ()))
    left = int(torch.randint(0, max(1, w - width + 1), ()))
    return np.ascontiguousarray(pixels[top : top + height, left : left + width])


@dataclass(frozen=True)
class AugmentedView:
    """A view of a randomly degraded copy (position, flip, rescale, blur, noise, JPEG), for training probes.

    The randomness is seeded by the image's pixels and the copy number, so copy k of an
    image is always the same picture: its embedding can be cached like any other view.
    """

    view: object  # a view transform with a cache_key
    augment: AugmentConfig
    copy: int

    @property
    def crop(self) -> tuple[int, int]:
        return self.view.crop

    @property
    def cache_key(self) -> str:
        settings = json.dumps(self.augment.model_dump(mode="json", exclude={"copies", "clean"}), sort_keys=True)
        return f"aug{self.copy}-{hashlib.sha1(settings.encode()).hexdigest()[:8]}>{self.view.cache_key}"

    def __call__(self, pixels: np.ndarray):
        seed = zlib.crc32(np.ascontiguousarray(pixels[::7, ::7]).tobytes()) ^ (self.copy * 0x9E3779B1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed & 0xFFFFFFFF)
            if not needs_whole_image(self.view):
                h, w = self.view.crop
                pick = center_region if self.augment.region == "center" else random_region
                pixels = pick(pixels, 2 * h + 2 * MARGIN, 2 * w + 2 * MARGIN)
            random = RandomAugment(self.augment)
            factor = random.rescale_factor()
            if factor is not None:
                pixels = rescale(pixels, factor)
            if torch.rand(()) < self.augment.hflip:
                pixels = np.ascontiguousarray(pixels[:, ::-1])
            pixels = random(pixels)
        return self.view(pixels)

