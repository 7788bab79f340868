"""Compose representations into one multi-channel input and normalize it.

The extractor is part of the network (:class:`synthdet.network.DetectorNet`), so features
are computed in torch on the batch, on the model's device, and an exported model carries
them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from synthdet.features import residual, spectral

#: ITU-R BT.601 luma weights, as Pillow's convert("L").
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Representation:
    """``fn(x, highpass_radius)`` maps B x C x H x W in [0, 1] to B x (C * channels_per_input) x H x W."""

    fn: Callable[[torch.Tensor, float], torch.Tensor]
    channels_per_input: int = 1
    description: str = ""


REPRESENTATIONS: dict[str, Representation] = {}


def register_representation(name: str, channels_per_input: int = 1, description: str = ""):
    def decorator(fn):
        REPRESENTATIONS[name] = Representation(fn, channels_per_input, description)
        return fn

    return decorator


register_representation("rgb", description="pixels in [0, 1]")(lambda x, radius: x)
register_representation("fft_mag", description="log(1+|FFT2|), fftshifted")(spectral.fft_magnitude)
register_representation("fft_phase", description="FFT2 phase, fftshifted")(spectral.fft_phase)
register_representation("dct", description="log|DCT-II|")(spectral.dct_log)
register_representation("highpass", description="image minus frequencies within highpass_radius")(
    spectral.highpass
)
register_representation("srm", channels_per_input=3, description="3 truncated SRM noise residuals")(
    residual.srm_residual
)
register_representation("grad", description="Sobel gradient magnitude")(residual.sobel_gradient)
register_representation("npr", description="x minus its nearest down-up copy")(residual.npr_residual)


class FeatureExtractor(nn.Module):
    """uint8 (or [0, 1] float) RGB batch -> concatenated representations, float32."""

    def __init__(self, representations: list[str], highpass_radius: float = 0.0, grayscale: bool = False):
        super().__init__()
        unknown = [r for r in representations if r not in REPRESENTATIONS]
        if unknown:
            raise ValueError(f"unknown representation(s) {unknown}; available: {sorted(REPRESENTATIONS)}")
        if "highpass" in representations and highpass_radius <= 0:
            raise ValueError("the 'highpass' representation needs features.highpass_radius > 0")
        self.representations = list(representations)
        self.highpass_radius = float(highpass_radius)
        self.grayscale = grayscale
        self.register_buffer("luma", torch.tensor(LUMA).view(1, 3, 1, 1), persistent=False)

    @property
    def out_channels(self) -> int:
        base = 1 if self.grayscale else 3
        return sum(REPRESENTATIONS[r].channels_per_input * base for r in self.representations)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Spectra need float32: half-precision FFTs lose the small high-frequency terms.
        with torch.autocast(device_type=images.device.type, enabled=False):
            x = images.float()
            if images.dtype == torch.uint8:
                x = x / 255.0
            if self.grayscale:
                x = (x * self.luma).sum(dim=1, keepdim=True)
            parts = [REPRESENTATIONS[r].fn(x, self.highpass_radius) for r in self.representations]
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class Normalize(nn.Module):
    """Per-channel standardization with statistics measured on raw training features."""

    def __init__(self, channels: int):
        super().__init__()
        # Not in the state dict: the checkpoint keeps the stats in its readable metadata.
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.ones(1, channels, 1, 1), persistent=False)

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean.view_as(self.mean))
        self.std.copy_(std.clamp_min(1e-6).view_as(self.std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
