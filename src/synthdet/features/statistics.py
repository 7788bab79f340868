"""Low-level statistics of a crop: a few numbers a probe can add to a backbone's embedding.

A frozen semantic backbone (CLIP) describes content; generator and renderer traces live
in the high frequencies it was never trained to keep. These summaries of the same
representations synthdet's end-to-end models use (Fourier spectrum, NPR and SRM
residuals) give a probe that signal at the cost of a few dozen dimensions.
Input: B x 3 x H x W in [0, 1]; output: B x d.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from synthdet.features.residual import npr_residual, srm_residual

SPECTRUM_BINS = 24


def spectral_profile(x: torch.Tensor, bins: int = SPECTRUM_BINS) -> torch.Tensor:
    """Azimuthally averaged log power spectrum of the luminance, in ``bins`` rings from DC to Nyquist.

    Up-sampling layers leave periodic peaks and a raised high-frequency tail in this
    profile (Durall et al. 2020); the DC bin is left out, so brightness does not count.
    """
    gray = x.float().mean(dim=1)
    gray = gray - gray.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(gray), dim=(-2, -1)).abs().square()
    ring = torch.as_tensor(_ring_index(tuple(gray.shape[-2:]), bins), device=x.device)
    flat = torch.log1p(power).flatten(1)
    keep = ring.flatten() >= 0
    sums = torch.zeros(flat.shape[0], bins, device=x.device).index_add_(1, ring.flatten()[keep], flat[:, keep])
    counts = torch.bincount(ring.flatten()[keep], minlength=bins).clamp_min(1).to(flat.dtype)
    return sums / counts


@functools.lru_cache(maxsize=8)
def _ring_index(size: tuple[int, int], bins: int) -> np.ndarray:
    """Ring number of every fftshifted bin; -1 for DC and beyond Nyquist."""
    h, w = size
    yy = (np.arange(h) - h // 2)[:, None] / (h / 2)
    xx = (np.arange(w) - w // 2)[None, :] / (w / 2)
    radius = np.sqrt(yy**2 + xx**2)
    index = np.minimum((radius * bins).astype(np.int64), bins - 1)
    index[(radius == 0) | (radius > 1)] = -1
    return index


def residual_statistics(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute value and standard deviation of the NPR and SRM residuals per channel (B x 24).

    Camera noise, demosaicing and generator up-sampling each leave residuals of their own
    size; logs keep the scale comparable between clean renders and noisy photos.
    """
    x = x.float()
    parts = []
    for residual in (npr_residual(x), srm_residual(x)):
        parts += [residual.abs().mean(dim=(-2, -1)), residual.std(dim=(-2, -1))]
    return torch.log(torch.cat(parts, dim=1) + 1e-4)


#: Name -> (function, output size): what a probe's ``low_level`` option may list.
LOW_LEVEL = {"spectrum": (spectral_profile, SPECTRUM_BINS), "residual": (residual_statistics, 24)}
