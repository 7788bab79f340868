"""Frequency-domain representations: Fourier magnitude and phase, DCT, high-pass.

All functions take a float batch B x C x H x W with values in [0, 1] and return one
output channel per input channel, at the input's spatial size.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

#: Floor added before the log of DCT magnitudes: about the size of 8-bit quantization
#: noise in an orthonormal DCT of [0, 1] pixels, so the log does not blow up on zeros.
DCT_LOG_EPS = 1e-4


def _shifted_spectrum(x: torch.Tensor, highpass_radius: float) -> torch.Tensor:
    spectrum = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    if highpass_radius > 0:
        spectrum = spectrum * _outside_radius(x.shape[-2:], highpass_radius, x.device, centered=True)
    return spectrum


def fft_magnitude(x: torch.Tensor, highpass_radius: float = 0.0) -> torch.Tensor:
    """log(1 + |FFT2|) per channel, DC moved to the centre (fftshift)."""
    return torch.log1p(_shifted_spectrum(x, highpass_radius).abs())


def fft_phase(x: torch.Tensor, highpass_radius: float = 0.0) -> torch.Tensor:
    """Phase angle of FFT2 in (-pi, pi], fftshifted; removed bins have phase 0."""
    return torch.angle(_shifted_spectrum(x, highpass_radius))


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions (as scipy.fft.dctn, norm='ortho')."""
    h, w = x.shape[-2:]
    dh = torch.as_tensor(dct_matrix(h), device=x.device, dtype=x.dtype)
    dw = torch.as_tensor(dct_matrix(w), device=x.device, dtype=x.dtype)
    return dh @ x @ dw.T


def dct_log(x: torch.Tensor, highpass_radius: float = 0.0) -> torch.Tensor:
    """log(|DCT-II| + eps); DC sits at the top-left corner."""
    coeffs = dct2(x)
    if highpass_radius > 0:
        coeffs = coeffs * _outside_radius(x.shape[-2:], highpass_radius, x.device, centered=False)
    return torch.log(coeffs.abs() + DCT_LOG_EPS)


def highpass(x: torch.Tensor, highpass_radius: float) -> torch.Tensor:
    """The image with every frequency within ``highpass_radius`` bins of DC removed."""
    spectrum = torch.fft.fft2(x)
    mask = torch.fft.ifftshift(_outside_radius(x.shape[-2:], highpass_radius, x.device, centered=True))
    return torch.fft.ifft2(spectrum * mask).real


# Constant matrices are cached as NumPy arrays and turned into tensors per call: a cached
# tensor created while torch.export traces the model would be a fake tensor.


@functools.lru_cache(maxsize=32)
def dct_matrix(n: int) -> np.ndarray:
    """n x n orthonormal DCT-II basis (float64), rows are frequencies."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    basis = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis


def _outside_radius(size, radius: float, device: torch.device, centered: bool) -> torch.Tensor:
    """1 outside, 0 inside a disc of ``radius`` bins around DC (centre, or top-left corner)."""
    return torch.as_tensor(_disc_mask(tuple(size), float(radius), centered), device=device)


@functools.lru_cache(maxsize=32)
def _disc_mask(size: tuple[int, int], radius: float, centered: bool) -> np.ndarray:
    h, w = size
    cy, cx = (h // 2, w // 2) if centered else (0, 0)
    yy = np.arange(h, dtype=np.float32)[:, None] - cy
    xx = np.arange(w, dtype=np.float32)[None, :] - cx
    return ((yy**2 + xx**2) >= radius**2).astype(np.float32)
