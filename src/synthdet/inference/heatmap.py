"""Heatmap: where in the image the model sees synthetic traces, as a map a person can read.

The views' P(synthetic) are interpolated between their centres over the whole image (not
painted as scattered squares), the views' outlines are drawn faintly, and a legend strip
under the image gives the colour scale and the verdict. A single view (the default
detector's center crop) colours only its crop: it says nothing about the rest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw
from scipy.interpolate import griddata

from synthdet.inference.detector import Prediction
from synthdet.rundir import atomic_path, prepare_folder

MAX_SIDE = 1024  # the map is drawn within these longer-side bounds, at the image's aspect;
MIN_SIDE = 384  # small images are enlarged with nearest-neighbour so their pixels stay visible
ALPHA = 0.45
LEGEND_HEIGHT = 44  # the strip under the map: colour scale and verdict
COLOURS = colormaps["RdYlBu_r"]  # blue real, red synthetic


def interpolate_views(shape: tuple[int, int], centres: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Values at view ``centres`` (row, column) spread over a ``shape`` grid: linear between centres,
    and beyond the outermost centres the value at the nearest point of their span (so the map's
    edges continue the grid smoothly instead of breaking into blocks); along a line of views,
    interpolated along that line."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    rows = np.clip(rows, centres[:, 0].min(), centres[:, 0].max())
    cols = np.clip(cols, centres[:, 1].min(), centres[:, 1].max())
    if len(values) == 1:
        return np.full(shape, float(values[0]))
    for axis, grid in ((0, cols), (1, rows)):  # every centre on one row (or one column)
        if np.ptp(centres[:, axis]) == 0:
            along = centres[:, 1 - axis]
            order = np.argsort(along)
            return np.interp(grid, along[order], values[order])
    linear = griddata(centres, values, (rows, cols), method="linear")
    outside = np.isnan(linear)
    if outside.any():
        linear[outside] = griddata(centres, values, (rows[outside], cols[outside]), method="nearest")
    return linear


def heatmap_image(pixels: np.ndarray, prediction: Prediction) -> Image.Image:
    """The image with its views' P(synthetic) interpolated over it, their outlines, and a legend.

    Needs ``prediction.tiles`` (predict with ``keep_tiles=True``); without views the image is
    shown under its legend. The map keeps the image's aspect; the legend adds LEGEND_HEIGHT rows.
    """
    height, width = pixels.shape[:2]
    scale = min(MAX_SIDE, max(MIN_SIDE, max(height, width))) / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BILINEAR
    base = np.asarray(Image.fromarray(pixels).resize(size, resample), dtype=np.float32) / 255
    views = prediction.tiles or []
    if views:
        centres = np.array([[(v["top"] + v["height"] / 2) * scale, (v["left"] + v["width"] / 2) * scale]
                            for v in views])
        probs = np.array([v["prob_synthetic"] for v in views], dtype=float)
        field = interpolate_views((size[1], size[0]), centres, probs)
        tint = np.ones((size[1], size[0], 1), dtype=np.float32)
        if len(views) == 1:  # one crop says nothing about the rest of the image: colour only where it looked
            v = views[0]
            tint[:] = 0
            tint[round(v["top"] * scale) : round((v["top"] + v["height"]) * scale),
                 round(v["left"] * scale) : round((v["left"] + v["width"]) * scale)] = 1
        base = (1 - ALPHA * tint) * base + ALPHA * tint * COLOURS(np.clip(field, 0, 1))[..., :3]
    canvas = Image.new("RGB", (size[0], size[1] + LEGEND_HEIGHT), (24, 24, 24))
    canvas.paste(Image.fromarray((base * 255 + 0.5).astype(np.uint8)), (0, 0))
    outlines = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(outlines)
    for v in views:
        box = [round(v["left"] * scale), round(v["top"] * scale), round((v["left"] + v["width"]) * scale) - 1,
               round((v["top"] + v["height"]) * scale) - 1]
        draw.rectangle(box, outline=(255, 255, 255, 70), width=1)
    canvas.paste(outlines, (0, 0), outlines)
    _legend(canvas, size, prediction, len(views))
    return canvas


def _legend(canvas: Image.Image, size: tuple[int, int], prediction: Prediction, n_views: int) -> None:
    """Colour scale from 0 (real) to 1 (synthetic) and the verdict, in the strip under the map."""
    draw = ImageDraw.Draw(canvas)
    top = size[1]
    bar_width = max(60, min(240, size[0] // 3))
    gradient = COLOURS(np.linspace(0, 1, bar_width))[:, :3]
    bar = Image.fromarray((np.repeat(gradient[None], 10, axis=0) * 255).astype(np.uint8))
    canvas.paste(bar, (8, top + 8))
    draw.text((8, top + 21), "0 real", fill=(220, 220, 220))
    draw.text((8 + bar_width - 54, top + 21), "1 synth.", fill=(220, 220, 220))
    verdict = prediction.verdict or prediction.label
    basis = f", {prediction.basis}" if prediction.basis and prediction.basis != "pixels" else ""
    views = ("1 view, the crop outlined (predict --tiles maps the whole image)" if n_views == 1 else
             f"{n_views} views, P per view between their centres")
    lines = (f"{verdict}{basis}: P(synthetic) {prediction.prob_synthetic:.2f}", views)
    for i, line in enumerate(lines):
        draw.text((bar_width + 20, top + 8 + 14 * i), line, fill=(255, 255, 255) if i == 0 else (180, 180, 180))


def write_heatmap(pixels: np.ndarray, prediction: Prediction, out_dir: Path) -> Path:
    path = prepare_folder(out_dir) / f"{Path(prediction.input).stem}.heatmap.png"
    with atomic_path(path) as tmp:
        heatmap_image(pixels, prediction).save(tmp, format="PNG")
    return path
