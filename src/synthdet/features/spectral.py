"""Frequency-domain representations: Fourier magnitude and phase, DCT, high-pass.

All functions take a float batch B x C x H x W with values in [0, 1] and return one
output channel per input channel, at the input's spatial size.
"""

from __future__ import annotations

import functools
import math

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
    dh = dct_matrix(h, x.device, x.dtype)
    dw = dct_matrix(w, x.device, x.dtype)
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


@functools.lru_cache(maxsize=32)
def dct_matrix(n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """n x n orthonormal DCT-II basis, rows are frequencies."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis.to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def _outside_radius(size: tuple[int, int], radius: float, device: torch.device, centered: bool) -> torch.Tensor:
    """1 outside, 0 inside a disc of ``radius`` bins around DC (centre, or top-left corner)."""
    h, w = size
    cy, cx = (h // 2, w // 2) if centered else (0, 0)
    yy = torch.arange(h, dtype=torch.float32).unsqueeze(1) - cy
    xx = torch.arange(w, dtype=torch.float32).unsqueeze(0) - cx
    return ((yy**2 + xx**2) >= radius**2).float().to(device)
