"""ENet: the CG-vs-natural-image network of Quan et al. 2020.

"Learn with diversity and from harder samples: Improving the generalization of CNN-based
detection of computer-generated images" (Forensic Science International: Digital
Investigation). Two branches see the input through differently initialized first
layers, for diverse low-level features: one learns its 5x5 filters from random init, the
other applies the 30 fixed SRM high-pass filters to every colour channel. Their 64-map
outputs are concatenated and go through three conv + max-pool blocks and three fully
connected layers; the penultimate one (``forward_features``) is the image embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthdet.features.residual import srm_kernels
from synthdet.models.registry import register_model


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


def _branch(cin: int) -> nn.Sequential:
    """Three unpadded 3x3 conv + BN layers (the first without ReLU), as in the paper."""
    return nn.Sequential(_conv_bn(cin, 64, 3, relu=False), _conv_bn(64, 64, 3), _conv_bn(64, 64, 3))


class ENet(nn.Module):
    """Two-branch CG detector; native input 233 x 233, any crop of at least 64 pixels works.

    The last max-pool is adaptive (to the 10 x 10 map the native size gives), so other
    crop sizes reach the fully connected layers with the same shape.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 2, hidden: int = 4096, drop_rate: float = 0.5):
        super().__init__()
        self.in_chans = in_chans
        self.learned_filters = nn.Conv2d(in_chans, 30, 5, bias=False)
        self.branch_learned = _branch(30)
        srm = srm_kernels().unsqueeze(1).repeat(in_chans, 1, 1, 1)  # (30 * C) x 1 x 5 x 5
        self.register_buffer("srm_filters", srm, persistent=False)  # fixed, never trained
        self.branch_srm = _branch(30 * in_chans)
        self.block1 = _conv_bn(128, 64, 7, stride=2)
        self.block2 = _conv_bn(64, 48, 5)
        self.block3 = _conv_bn(48, 64, 3)
        self.final_pool = nn.AdaptiveMaxPool2d(10)
        self.fc1 = nn.Linear(64 * 10 * 10, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(drop_rate)
        self.num_features = hidden

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        learned = self.branch_learned(self.learned_filters(x))
        residuals = F.conv2d(x, self.srm_filters, groups=self.in_chans)
        x = torch.cat([learned, self.branch_srm(residuals)], dim=1)
        x = F.max_pool2d(self.block1(x), 3, stride=2)
        x = F.max_pool2d(self.block2(x), 3, stride=2)
        x = self.final_pool(self.block3(x)).flatten(1)
        x = self.dropout(F.relu(self.fc1(x)))
        return F.relu(self.fc2(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.dropout(self.forward_features(x)))


@register_model(first_conv="learned_filters", classifier="fc3")
def enet(in_chans: int = 3, num_classes: int = 2, **options) -> ENet:
    """ENet (Quan et al. 2020): random-init and fixed-SRM branches, 4096-d embedding."""
    return ENet(in_chans, num_classes, **options)
