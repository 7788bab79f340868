"""A small labelled dataset that needs no download: rendered scenes vs. "camera" scenes.

Both classes draw the same kinds of procedural scenes. *Synthetic* images are the clean
render. *Real-like* images pass the same scene through a simulated camera: lens blur,
Bayer mosaic, shot and read noise, bilinear demosaicing and in-camera JPEG. Every file of
both classes is then written by the same final step (JPEG at one quality, one size
range), so file format, quality and size carry no label: only the camera traces do.

It is a toy for trying the pipeline and for tests, not a model of real-world data.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

#: Quality of the final JPEG every toy image (both classes) is written with.
FINAL_JPEG_QUALITY = 95


@dataclass(frozen=True)
class ToySource:
    name: str
    label: str  # "real" or "synthetic"
    scene: str  # "shapes" or "terrain"


TOY_SOURCES = (
    ToySource("render-shapes", "synthetic", "shapes"),
    ToySource("render-terrain", "synthetic", "terrain"),
    ToySource("camera-shapes", "real", "shapes"),
    ToySource("camera-terrain", "real", "terrain"),
)


def write_toy_dataset(
    root: str | Path,
    images_per_source: int = 200,
    sizes: tuple[tuple[int, int], ...] = ((160, 120), (192, 144), (176, 176)),
    seed: int = 0,
) -> list[dict]:
    """Write ``root/<source>/<n>.jpg`` for the four toy sources; return their source entries.

    ``sizes`` are (width, height) pairs drawn uniformly for every image of both classes.
    The returned list can be used as ``data.sources`` of a config.
    """
    root = Path(root)
    entries = []
    for source_index, source in enumerate(TOY_SOURCES):
        folder = root / source.name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_source):
            rng = np.random.default_rng([seed, source_index, i])
            width, height = sizes[rng.integers(len(sizes))]
            image = toy_image(rng, source.scene, source.label == "real", height, width)
            Image.fromarray(image).save(folder / f"{source.scene}_{i:04d}.jpg", quality=FINAL_JPEG_QUALITY)
        entries.append({"name": source.name, "path": str(folder), "label": source.label})
    return entries


def toy_image(rng: np.random.Generator, scene: str, camera: bool, height: int, width: int) -> np.ndarray:
    """One uint8 H x W x 3 toy image: a scene, optionally through the simulated camera."""
    render = render_shapes if scene == "shapes" else render_terrain
    linear = render(rng, height, width)
    if camera:
        return simulate_camera(rng, linear)
    return _to_uint8(linear)


def render_shapes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Gradient background with flat-coloured circles, rectangles and triangles (hard edges)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = _gradient(rng, yy, xx)
    for _ in range(rng.integers(3, 9)):
        colour = rng.uniform(0.05, 0.95, 3).astype(np.float32)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        size = rng.uniform(0.08, 0.35) * min(height, width)
        kind = rng.integers(3)
        if kind == 0:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= size**2
        elif kind == 1:
            mask = (np.abs(yy - cy) <= size * rng.uniform(0.3, 1)) & (np.abs(xx - cx) <= size)
        else:
            mask = (yy - cy >= -size) & (np.abs(xx - cx) <= (yy - cy + size) * 0.6) & (yy - cy <= size)
        shade = 1 - 0.3 * (yy - cy) / (2 * size + 1)  # a little shading so shapes are not flat
        image = np.where(mask[..., None], np.clip(colour * shade[..., None], 0, 1), image)
    return image


def render_terrain(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Sky gradient over a textured sea or land, with a few block-shaped 'ships' on the horizon."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = int(height * rng.uniform(0.3, 0.6))
    sky_top, sky_low = rng.uniform(0.3, 0.9, 3), rng.uniform(0.5, 1.0, 3)
    t = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    image = (sky_top * (1 - t) + sky_low * t).astype(np.float32)
    texture = _fractal_noise(rng, height, width)
    ground_a, ground_b = rng.uniform(0.05, 0.6, 3), rng.uniform(0.1, 0.8, 3)
    depth = np.clip((yy - horizon) / max(height - horizon, 1), 0, 1)[..., None]
    ground = (ground_a * (1 - texture[..., None]) + ground_b * texture[..., None]) * (0.7 + 0.3 * depth)
    image = np.where((yy >= horizon)[..., None], ground, image)
    for _ in range(rng.integers(0, 4)):
        w, h = rng.uniform(0.05, 0.2) * width, rng.uniform(0.03, 0.1) * height
        x0 = rng.uniform(0, width - w)
        mask = (xx >= x0) & (xx <= x0 + w) & (yy >= horizon - h) & (yy <= horizon + 1)
        image = np.where(mask[..., None], rng.uniform(0.0, 0.9, 3), image)
    return np.clip(image, 0, 1).astype(np.float32)


def simulate_camera(rng: np.random.Generator, linear: np.ndarray) -> np.ndarray:
    """Lens blur, RGGB Bayer sampling, shot + read noise, bilinear demosaic, in-camera JPEG."""
    sigma = rng.uniform(0.5, 1.1)
    blurred = np.stack([ndimage.gaussian_filter(linear[..., c], sigma) for c in range(3)], axis=-1)
    mosaic = _bayer_mosaic(blurred)
    full_well = rng.uniform(300, 1500)  # electrons at saturation: fewer = noisier
    noisy = rng.poisson(np.clip(mosaic, 0, 1) * full_well) / full_well
    noisy = noisy + rng.normal(0, rng.uniform(0.002, 0.01), noisy.shape)
    rgb = _demosaic_bilinear(noisy.astype(np.float32))
    buffer = io.BytesIO()
    Image.fromarray(_to_uint8(rgb)).save(buffer, format="JPEG", quality=int(rng.integers(80, 96)))
    return np.asarray(Image.open(buffer).convert("RGB"))


def _bayer_mosaic(rgb: np.ndarray) -> np.ndarray:
    """One colour sample per pixel, RGGB pattern."""
    mosaic = rgb[..., 1].copy()
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    return mosaic


def _demosaic_bilinear(mosaic: np.ndarray) -> np.ndarray:
    h, w = mosaic.shape
    masks = np.zeros((3, h, w), dtype=np.float32)
    masks[0, 0::2, 0::2] = 1
    masks[2, 1::2, 1::2] = 1
    masks[1] = 1 - masks[0] - masks[2]
    rb_kernel = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float32) / 4
    g_kernel = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float32) / 4
    channels = [
        ndimage.convolve(mosaic * masks[c], g_kernel if c == 1 else rb_kernel, mode="mirror") for c in range(3)
    ]
    return np.stack(channels, axis=-1)


def _gradient(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    angle = rng.uniform(0, 2 * np.pi)
    t = xx * np.cos(angle) + yy * np.sin(angle)
    t = ((t - t.min()) / (np.ptp(t) + 1e-6))[..., None]
    a, b = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    return (a * (1 - t) + b * t).astype(np.float32)


def _fractal_noise(rng: np.random.Generator, height: int, width: int, octaves: int = 5) -> np.ndarray:
    """Sum of bilinearly upsampled random grids (value noise), normalized to [0, 1]."""
    total = np.zeros((height, width), dtype=np.float32)
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.uniform(0, 1, (cells + 1, cells + 1)).astype(np.float32)
        zoomed = ndimage.zoom(grid, (height / (cells + 1), width / (cells + 1)), order=1)[:height, :width]
        total[: zoomed.shape[0], : zoomed.shape[1]] += zoomed * 0.5**octave
    total -= total.min()
    return total / (total.max() + 1e-6)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
