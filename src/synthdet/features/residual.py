"""Pixel-domain residuals: SRM noise residuals, Sobel gradients, NPR up-sampling residual.

Each removes image content and keeps the local, high-frequency structure where sensor
noise (real cameras) or interpolation and rendering traces (generators, renderers) live.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

#: SRM residuals are truncated at this many grey levels (of 255), as in steganalysis:
#: large residuals come from edges (content), small ones from noise (the signal).
SRM_TRUNCATION = 3.0


def _embed(kernel: list[list[float]]) -> np.ndarray:
    """Place a small kernel at the centre of a 5x5 grid."""
    k = np.array(kernel, dtype=np.float64)
    out = np.zeros((5, 5))
    off = (5 - k.shape[0]) // 2
    out[off : off + k.shape[0], off : off + k.shape[1]] = k
    return out


def _rotations(kernel: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` distinct orientations: 90-degree rotations, then their transposes."""
    turns = [np.rot90(kernel, r) for r in range(4)]
    return (turns + [t.T for t in turns])[:count]


def srm_kernels() -> torch.Tensor:
    """The 30 basic high-pass filters of the Spatial Rich Model (Fridrich & Kodovsky 2012), 30 x 5 x 5.

    First order (8 directions), second order (4), third order (8), SQUARE 3x3 and 5x5,
    EDGE 3x3 and 5x5 (4 each); every kernel sums to zero, so flat regions give zero.
    """
    return torch.as_tensor(_srm_kernels_array(), dtype=torch.float32)


@functools.lru_cache(maxsize=1)
def _srm_kernels_array() -> np.ndarray:
    # (cached as NumPy: see the note in spectral.py)
    first = _embed([[0, 0, 0], [0, -1, 1], [0, 0, 0]])
    first_diag = _embed([[0, 0, 0], [0, -1, 0], [0, 0, 1]])
    second = _embed([[0, 0, 0], [1, -2, 1], [0, 0, 0]]) / 2
    second_diag = _embed([[1, 0, 0], [0, -2, 0], [0, 0, 1]]) / 2
    third = np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -3, 3, -1], [0] * 5, [0] * 5]) / 3
    third_diag = np.diag([0, 1, -3, 3, -1]) / 3
    square3 = _embed([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]]) / 4
    square5 = np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2],
                        [-1, 2, -2, 2, -1]]) / 12
    edge3 = _embed([[-1, 2, -1], [2, -4, 2], [0, 0, 0]]) / 4
    edge5 = square5.copy()
    edge5[3:] = 0
    kernels = (
        _rotations(first, 4) + _rotations(first_diag, 4)
        + _rotations(second, 2) + _rotations(second_diag, 2)
        + _rotations(third, 4) + _rotations(third_diag, 4)
        + [square3, square5]
        + _rotations(edge3, 4) + _rotations(edge5, 4)
    )
    return np.stack(kernels)


#: The three SRM kernels used in image forensics (Zhou et al. 2018, RGB-N): SQUARE 5x5,
#: SQUARE 3x3 and the horizontal second-order filter.
FORENSIC_SRM = (21, 20, 8)


def srm_residual(x: torch.Tensor, highpass_radius: float = 0.0) -> torch.Tensor:
    """Three truncated SRM residuals per input channel, scaled to [-1, 1] (B x 3C x H x W)."""
    b, c, h, w = x.shape
    kernels = srm_kernels()[list(FORENSIC_SRM)].to(x.device, x.dtype).unsqueeze(1)  # 3 x 1 x 5 x 5
    residual = F.conv2d(F.pad(x.reshape(b * c, 1, h, w), (2, 2, 2, 2), mode="reflect"), kernels)
    residual = torch.clamp(residual * 255.0, -SRM_TRUNCATION, SRM_TRUNCATION) / SRM_TRUNCATION
    return residual.reshape(b, c * 3, h, w)


def sobel_gradient(x: torch.Tensor, highpass_radius: float = 0.0) -> torch.Tensor:
    """Sobel gradient magnitude per channel."""
    b, c, h, w = x.shape
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([gx, gx.T]).unsqueeze(1)  # 2 x 1 x 3 x 3
    grads = F.conv2d(F.pad(x.reshape(b * c, 1, h, w), (1, 1, 1, 1), mode="replicate"), kernels)
    return torch.sqrt((grads * grads).sum(dim=1) + 1e-12).reshape(b, c, h, w)


def npr_residual(x: torch.Tensor, highpass_radius: float = 0.0) -> torch.Tensor:
    """Neighbouring-pixel relationships (Tan et al. 2024): x minus its nearest down-then-up copy.

    An image that was up-sampled by 2 with nearest-neighbour or similar interpolation (as
    generator decoders do) has strongly correlated 2x2 neighbourhoods, which this exposes.
    """
    h, w = x.shape[-2:]
    down = x[..., ::2, ::2]
    up = down.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :h, :w]
    return x - up
