"""A plain CNN with one projected skip connection and global average pooling."""

from __future__ import annotations

import torch
from torch import nn

from synthdet.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ResidualGapCNN(nn.Module):
    """Five conv stages with 32-64-128-256-512 maps (2x2 max-pool between them).

    The 128-map output skips the 256 stage through a 1x1 stride-2 projection and is
    added to the 512-map output, so early, fine-scale evidence reaches the classifier
    directly; global average pooling makes any input size work.
    """

    def __init__(self, in_chans: int = 3, num_classes: int = 2, drop_rate: float = 0.3):
        super().__init__()
        self.stage1 = nn.Sequential(_conv_bn_relu(in_chans, 32), nn.MaxPool2d(2))
        self.stage2 = nn.Sequential(_conv_bn_relu(32, 64), nn.MaxPool2d(2))
        self.stage3 = nn.Sequential(_conv_bn_relu(64, 128), nn.MaxPool2d(2))
        self.stage4 = nn.Sequential(_conv_bn_relu(128, 256), nn.MaxPool2d(2))
        self.stage5 = _conv_bn_relu(256, 512)
        self.skip = nn.Sequential(nn.Conv2d(128, 512, 1, stride=2, bias=False), nn.BatchNorm2d(512))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(512, num_classes)
        self.num_features = 512

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x3 = self.stage3(self.stage2(self.stage1(x)))
        x5 = self.stage5(self.stage4(x3))
        skip = self.skip(x3)[..., : x5.shape[-2], : x5.shape[-1]]  # odd sizes: align to x5
        return self.pool(torch.relu(x5 + skip)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


@register_model(first_conv="stage1.0.0", classifier="fc")
def residual_gap_cnn(in_chans: int = 3, num_classes: int = 2, **options) -> ResidualGapCNN:
    """Plain 5-stage CNN with a 1x1-projected skip and global average pooling."""
    return ResidualGapCNN(in_chans, num_classes, **options)
