"""The full network a checkpoint holds: features -> normalization -> backbone."""

from __future__ import annotations

import torch
from torch import nn

from synthdet.config import ConfigError, FeatureConfig, ModelConfig
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


def check_crop_fits(net: DetectorNet, crop: tuple[int, int], model_name: str) -> None:
    """Refuse, naming the setting, a crop too small for the network's pooling and unpadded convs.

    One forward pass of a blank image at the crop size, before any data is read, so a
    bad ``data.crop`` is a one-line configuration error instead of a torch traceback mid-epoch.
    """
    height, width = crop
    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode():
            net(torch.zeros(1, 3, height, width, dtype=torch.uint8))
    except RuntimeError as exc:
        raise ConfigError(
            f"data.crop: model {model_name!r} cannot take {width}x{height} crops "
            f"({str(exc).splitlines()[0]}); use a larger crop"
        ) from exc
    finally:
        net.train(was_training)
