"""The small LeNet-style CNNs of the CIFAKE literature (32 x 32 inputs).

Layer names follow the public aics-project models (conv1, attend, conv2, fc1-3), so their
released state dicts import (see ``synthdet import-cifake``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthdet.models.registry import register_model


class StyleRecalibration(nn.Module):
    """SRM channel attention (Lee et al. 2019, "SRM: A Style-based Recalibration Module").

    Each channel's style is its spatial mean and standard deviation; a channel-wise fully
    connected layer (a grouped 1-D conv over the two statistics), batch norm and a sigmoid
    turn it into a gate that rescales the channel.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.cfc = nn.Conv1d(channels, channels, kernel_size=2, groups=channels, bias=False)
        self.bn = nn.BatchNorm1d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        style = torch.stack([flat.mean(dim=2), flat.std(dim=2, unbiased=False)], dim=2)  # B x C x 2
        gate = torch.sigmoid(self.bn(self.cfc(style)))  # B x C x 1
        return x * gate.unsqueeze(-1)


class CifakeCNN(nn.Module):
    """conv(5x5, 6) -> pool -> [SRM] -> conv(5x5, 16) -> pool -> fc 400-120-84 -> classes."""

    def __init__(self, in_chans: int = 3, num_classes: int = 2, attention: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 6, 5)
        self.attend = StyleRecalibration(6) if attention else nn.Identity()
        self.conv2 = nn.Conv2d(6, 16, 5)
        # 32 x 32 inputs reach this point as 5 x 5 maps; other sizes are pooled to it.
        self.pool_to_fc = nn.AdaptiveAvgPool2d(5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.num_features = 84

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = self.attend(x)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.pool_to_fc(x).flatten(1)
        return F.relu(self.fc2(F.relu(self.fc1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.forward_features(x))


@register_model(first_conv="conv1", classifier="fc3")
def cifake_cnn(in_chans: int = 3, num_classes: int = 2) -> CifakeCNN:
    """The CIFAKE CNN (about 62 k parameters), for 32 x 32 images."""
    return CifakeCNN(in_chans, num_classes, attention=False)


@register_model(first_conv="conv1", classifier="fc3")
def cifake_cnn_srm(in_chans: int = 3, num_classes: int = 2) -> CifakeCNN:
    """The CIFAKE CNN with SRM style-based channel attention before the second conv."""
    return CifakeCNN(in_chans, num_classes, attention=True)
