"""ResNet-18/34/50 in plain torch with torchvision's state-dict keys, and the CIFAR ResNets.

torchvision is not importable here, but its published ImageNet weights load from a
local file (``model.pretrained``) because every parameter has the same name and shape.
The CIFAR ResNets (He et al. 2016, section 4.2) are built from the same blocks, with the
same key names, for 32 x 32 inputs.
"""

from __future__ import annotations

from torch import nn

from synthdet.models.registry import register_model


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(block, inplanes: int, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
    """``blocks`` residual blocks; the first one changes width and stride, through a 1x1 projection shortcut."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample)]
    layers += [block(planes * block.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module) -> None:
    """He initialization for convs, unit-scale batch norms (torchvision's choices)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], in_chans: int = 3, num_classes: int = 2, drop_rate: float = 0.0):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 512 * block.expansion
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        _init_weights(self)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layer = make_stage(block, self.inplanes, planes, blocks, stride)
        self.inplanes = planes * block.expansion
        return layer

    def forward_features(self, x):
        """Pooled embedding (B x num_features)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.dropout(self.forward_features(x)))


class CifarResNet(nn.Module):
    """He et al.'s ResNet for 32 x 32 images: depth 6n + 2 (20, 32, 44, 56, 110).

    The ImageNet stem (7x7 stride-2 conv, then a max-pool) would shrink a 32 x 32 image to
    8 x 8 before the first block; here a 3x3 stride-1 conv keeps every pixel, and three
    stages of n basic blocks at ``width``, 2 ``width`` and 4 ``width`` channels work at
    32, 16 and 8 pixels. Shortcuts that change shape are 1x1 projections (torchvision's
    choice; the paper zero-pads).
    """

    def __init__(self, depth: int = 20, in_chans: int = 3, num_classes: int = 2, width: int = 16,
                 drop_rate: float = 0.0):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"resnet_cifar depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv1 = _conv3x3(in_chans, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = make_stage(BasicBlock, width, width, n)
        self.layer2 = make_stage(BasicBlock, width, 2 * width, n, stride=2)
        self.layer3 = make_stage(BasicBlock, 2 * width, 4 * width, n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = 4 * width
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes)
        _init_weights(self)

    def forward_features(self, x):
        """Pooled embedding (B x num_features)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.avgpool(x).flatten(1)

    def forward(self, x):
        return self.fc(self.dropout(self.forward_features(x)))


@register_model(first_conv="conv1", classifier="fc")
def resnet18(in_chans: int = 3, num_classes: int = 2, **options) -> ResNet:
    """ResNet-18 (11.7 M parameters at 3 channels / 1000 classes)."""
    return ResNet(BasicBlock, [2, 2, 2, 2], in_chans, num_classes, **options)


@register_model(first_conv="conv1", classifier="fc")
def resnet34(in_chans: int = 3, num_classes: int = 2, **options) -> ResNet:
    """ResNet-34."""
    return ResNet(BasicBlock, [3, 4, 6, 3], in_chans, num_classes, **options)


@register_model(first_conv="conv1", classifier="fc")
def resnet50(in_chans: int = 3, num_classes: int = 2, **options) -> ResNet:
    """ResNet-50 (bottleneck blocks)."""
    return ResNet(Bottleneck, [3, 4, 6, 3], in_chans, num_classes, **options)


@register_model(first_conv="conv1", classifier="fc")
def resnet_cifar(in_chans: int = 3, num_classes: int = 2, depth: int = 20, **options) -> CifarResNet:
    """CIFAR ResNet for 32 x 32 inputs (He et al. 2016; ResNet-20: 0.27 M parameters), option depth."""
    return CifarResNet(depth, in_chans, num_classes, **options)
