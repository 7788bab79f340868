"""Cover an image with crop-sized tiles, so a verdict uses all of a large photo, not one crop.

Tiles are placed on an even grid from edge to edge; neighbours overlap by at least the
requested fraction when the tile budget allows. For very large images the overlap is
reduced first, and only when even edge-to-edge tiles would exceed ``max_tiles`` is the
grid thinned (leaving gaps, reported as coverage below 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from synthdet.data.transforms import pad_to_size


def _positions(length: int, tile: int, count: int) -> list[int]:
    """``count`` start offsets from 0 to length - tile, evenly spaced."""
    if count <= 1 or length <= tile:
        return [max(0, (length - tile) // 2)]
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _count(length: int, tile: int, overlap: float) -> int:
    """Tiles needed along one axis for neighbours to overlap by ``overlap`` of a tile."""
    if length <= tile:
        return 1
    stride = max(1.0, tile * (1 - overlap))
    return math.ceil((length - tile) / stride) + 1


def plan_tiles(height: int, width: int, crop: tuple[int, int], overlap: float = 0.25,
               max_tiles: int = 64) -> list[tuple[int, int]]:
    """Top-left corners of the tiles for an image of ``height`` x ``width``."""
    tile_h, tile_w = crop
    for ov in np.linspace(overlap, 0.0, 6):  # give up overlap before coverage
        rows, cols = _count(height, tile_h, ov), _count(width, tile_w, ov)
        if rows * cols <= max_tiles:
            break
    else:  # even touching tiles are too many: thin the grid, keeping the aspect as far as
        # the cap allows (an image thinner than the crop is one row or column, never more tiles)
        scale = math.sqrt(max_tiles / (rows * cols))
        rows = min(max(1, math.floor(rows * scale)), max_tiles)
        cols = min(max(1, math.floor(cols * scale)), max_tiles // rows)
    return [(top, left) for top in _positions(height, tile_h, rows) for left in _positions(width, tile_w, cols)]


def coverage(height: int, width: int, crop: tuple[int, int], corners: list[tuple[int, int]]) -> float:
    """Fraction of the image's pixels inside at least one tile."""
    covered = np.zeros((height, width), dtype=bool)
    for top, left in corners:
        covered[top : top + crop[0], left : left + crop[1]] = True
    return float(covered.mean())


@dataclass(frozen=True)
class TileTransform:
    """Loader transform: all tiles of an image (K x h x w x 3) and their boxes in the image.

    Boxes are (top, left, height, width) in the original image, clipped to it; an image no
    larger than the crop is one padded tile (the spine's rule for small images).
    """

    crop: tuple[int, int]
    overlap: float = 0.25
    max_tiles: int = 64

    @property
    def cache_key(self) -> str:
        return f"tiles{self.crop[0]}x{self.crop[1]}-o{self.overlap:g}-n{self.max_tiles}"

    def __call__(self, pixels: np.ndarray):
        height, width = pixels.shape[:2]
        h, w = self.crop
        # Tiles are planned on the image as padded to the crop, but each tile is cut first
        # and padded alone: the same pixels, without a padded copy of a 1 x 5,000,000 image.
        padded_h, padded_w = max(height, h), max(width, w)
        pad_top, pad_left = (padded_h - height) // 2, (padded_w - width) // 2
        corners = plan_tiles(padded_h, padded_w, self.crop, self.overlap, self.max_tiles)
        tiles = np.stack([pad_to_size(pixels[t : t + h, l : l + w], h, w) for t, l in corners])
        boxes = []
        for t, l in corners:
            top, left = max(0, t - pad_top), max(0, l - pad_left)
            bottom, right = min(height, t - pad_top + h), min(width, l - pad_left + w)
            boxes.append((top, left, bottom - top, right - left))
        return tiles, boxes
