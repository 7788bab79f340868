"""Heatmap: the image with each tile's P(synthetic) painted over it, at the image's aspect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw

from synthdet.inference.detector import Prediction
from synthdet.rundir import atomic_path, prepare_folder

MAX_SIDE = 1024  # heatmaps are drawn within these longer-side bounds, at the image's aspect;
MIN_SIDE = 384  # small images are enlarged with nearest-neighbour so their pixels stay visible
ALPHA = 0.45


def heatmap_image(pixels: np.ndarray, prediction: Prediction) -> Image.Image:
    """Blend a blue (real) to red (synthetic) map of the tile probabilities over ``pixels``.

    Where tiles overlap, the map shows their mean; pixels no tile covers stay unpainted.
    Needs ``prediction.tiles`` (predict with ``keep_tiles=True``).
    """
    height, width = pixels.shape[:2]
    scale = min(MAX_SIDE, max(MIN_SIDE, max(height, width))) / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    base = np.asarray(Image.fromarray(pixels).resize(size, resample), dtype=np.float32) / 255
    total = np.zeros((size[1], size[0]), np.float32)
    count = np.zeros_like(total)
    for tile in prediction.tiles or []:
        top, left = round(tile["top"] * scale), round(tile["left"] * scale)
        bottom, right = round((tile["top"] + tile["height"]) * scale), round((tile["left"] + tile["width"]) * scale)
        total[top:bottom, left:right] += tile["prob_synthetic"]
        count[top:bottom, left:right] += 1
    covered = count > 0
    colours = colormaps["RdYlBu_r"](np.where(covered, total / np.maximum(count, 1), 0.0))[..., :3]
    blended = np.where(covered[..., None], (1 - ALPHA) * base + ALPHA * colours, base)
    image = Image.fromarray((blended * 255 + 0.5).astype(np.uint8))
    caption = f"P(synthetic) {prediction.prob_synthetic:.2f}: {prediction.label}"
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 8 + 6 * len(caption), 16), fill=(0, 0, 0))
    draw.text((4, 3), caption, fill=(255, 255, 255))
    return image


def write_heatmap(pixels: np.ndarray, prediction: Prediction, out_dir: Path) -> Path:
    path = prepare_folder(out_dir) / f"{Path(prediction.input).stem}.heatmap.png"
    with atomic_path(path) as tmp:
        heatmap_image(pixels, prediction).save(tmp, format="PNG")
    return path
