"""Image degradations: JPEG re-compression, Gaussian blur, Gaussian noise, rescaling.

The primitives are deterministic given their parameter (robustness sweeps call them
directly); :class:`RandomAugment` applies them at random during training, each with its
own probability and range, so a detector does not rely on traces that the first JPEG
save or resize on the way to a user would destroy. All work on uint8 H x W x 3 arrays.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from scipy import ndimage


def jpeg_compress(pixels: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG at ``quality`` (Pillow / libjpeg-turbo, 4:2:0 as cameras do)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` pixels (per channel)."""
    if sigma <= 0:
        return pixels
    blurred = ndimage.gaussian_filter(pixels.astype(np.float32), sigma=(sigma, sigma, 0), mode="reflect")
    return np.clip(blurred + 0.5, 0, 255).astype(np.uint8)


def gaussian_noise(pixels: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Add i.i.d. Gaussian noise of ``sigma`` (in [0, 1] intensity units), then requantize."""
    if sigma <= 0:
        return pixels
    noise = np.random.default_rng(seed).normal(0.0, sigma * 255.0, pixels.shape)
    return np.clip(pixels + noise + 0.5, 0, 255).astype(np.uint8)


def rescale(pixels: np.ndarray, factor: float) -> np.ndarray:
    """Resize by ``factor``."""
    h, w = pixels.shape[:2]
    return resize_to(pixels, max(1, round(h * factor)), max(1, round(w * factor)))


def resize_to(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize with Pillow's antialiased bicubic filter (what most tools do)."""
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _happens(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


class RandomAugment:
    """Blur, noise and JPEG at random, drawn from torch's RNG (seeded per loader worker).

    Applied to the crop, in the order a picture degrades: optics, sensor, storage.
    Random rescaling is done by :class:`~synthdet.data.transforms.TrainTransform`
    together with the crop, so it never resizes a whole large image.
    """

    def __init__(self, config):
        self.config = config  # synthdet.config.AugmentConfig

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        c = self.config
        if _happens(c.blur.p):
            pixels = gaussian_blur(pixels, _uniform(*c.blur.sigma))
        if _happens(c.noise.p):
            pixels = gaussian_noise(pixels, _uniform(*c.noise.sigma), int(torch.randint(0, 2**31 - 1, ())))
        if _happens(c.jpeg.p):
            pixels = jpeg_compress(pixels, round(_uniform(*c.jpeg.quality)))
        return pixels

    def rescale_factor(self) -> float | None:
        """A random resize factor for this sample, or None."""
        c = self.config.resize
        return _uniform(*c.scale) if _happens(c.p) else None
