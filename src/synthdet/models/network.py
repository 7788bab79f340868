"""The full network a checkpoint holds: features -> normalization -> backbone."""

from __future__ import annotations

import torch
from torch import nn

from synthdet.config import FeatureConfig, ModelConfig
from synthdet.features import FeatureExtractor, Normalize
from synthdet.models.registry import create_model


class DetectorNet(nn.Module):
    """uint8 RGB batch (B x 3 x H x W) -> class logits (B x 2).

    Keeping the feature computation inside the module means training, inference and
    export all run exactly the same preprocessing.
    """

    def __init__(self, features: FeatureExtractor, backbone: nn.Module):
        super().__init__()
        self.features = features
        self.normalize = Normalize(features.out_channels)
        self.backbone = backbone
        self.channels_last = False

    def use_channels_last(self, enabled: bool = True) -> "DetectorNet":
        """Run the backbone in channels-last memory format (often faster with oneDNN / cuDNN)."""
        self.channels_last = enabled
        self.backbone.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)
        return self

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """What the backbone sees: normalized features."""
        x = self.normalize(self.features(images))
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.inputs(images))


def build_network(features: FeatureConfig, model: ModelConfig, num_classes: int = 2) -> DetectorNet:
    extractor = FeatureExtractor(features.representations, features.highpass_radius, features.grayscale)
    backbone = create_model(
        model.name, in_chans=extractor.out_channels, num_classes=num_classes, pretrained=model.pretrained,
        **model.options,
    )
    return DetectorNet(extractor, backbone)
