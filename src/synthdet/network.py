"""The full network a checkpoint holds: features -> normalization -> backbone, built in one place.

:func:`build_network` is the only constructor: training, checkpoint loading, one-class
heads and importers all call it, so a feature setting cannot reach the network one way
in training and another at inference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from synthdet import weights
from synthdet.checkpoint import (
    CheckpointError,
    CheckpointMeta,
    Normalization,
    read_metadata,
    read_pretrained,
    read_tensors,
    save_checkpoint,
)
from synthdet.config import ConfigError, FeatureConfig
from synthdet.features import FeatureExtractor, Normalize
from synthdet.models import create_model


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

    def normalization(self) -> Normalization:
        return Normalization(mean=self.normalize.mean.flatten().tolist(), std=self.normalize.std.flatten().tolist())


def build_network(features: FeatureConfig, model: str, options: dict | None = None, *, num_classes: int = 2,
                  pretrained: str | Path | None = None, normalization: Normalization | None = None) -> DetectorNet:
    """The network for these feature settings and this registered model.

    ``pretrained`` (a weights file or a synthdet checkpoint) initializes the backbone;
    ``normalization`` fixes the feature statistics (otherwise they are measured before training).
    """
    extractor = FeatureExtractor(features.representations, features.highpass_radius, features.grayscale)
    state = read_pretrained(pretrained) if pretrained is not None else None
    backbone = create_model(model, in_chans=extractor.out_channels, num_classes=num_classes, pretrained=state,
                            **(options or {}))
    net = DetectorNet(extractor, backbone)
    if normalization is not None:
        net.normalize.set_stats(torch.tensor(normalization.mean), torch.tensor(normalization.std))
    return net


def network_from_meta(meta: CheckpointMeta, log: Callable[[str], None] = print) -> DetectorNet:
    """An untrained network with the architecture and preprocessing the metadata describes.

    Frozen pretrained weights the checkpoint names are fetched on first use (``synthdet
    weights get``) and must match the recorded sha256.
    """
    ref = meta.model.pretrained
    if ref is not None:
        if ref.weights in weights.KNOWN_WEIGHTS and weights.known(ref.weights).installed_sha256() is None:
            log(f"first use of backbone {ref.weights}: fetching it with `synthdet weights get {ref.weights}`")
            weights.get(ref.weights, log=log)
        found = weights.describe(ref.weights)["sha256"]
        if found != ref.sha256:
            raise CheckpointError(f"backbone {ref.weights} has sha256 {found}, but the checkpoint was trained on "
                                  f"{ref.sha256}; these are different weights")
    return build_network(meta.features, meta.model.name, meta.model.options, num_classes=meta.model.num_classes,
                         normalization=meta.normalization, pretrained=ref.weights if ref else None)


def load_network(path: str | Path, log: Callable[[str], None] = print) -> tuple[DetectorNet, CheckpointMeta]:
    """Network (on the CPU, in eval mode) and metadata from a checkpoint file."""
    meta = read_metadata(path)
    net = network_from_meta(meta, log)
    state = read_tensors(path)
    frozen = set(net.state_dict()) - set(trained_state(net))
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not fit the model its metadata describes ({exc})") from None
    if set(missing) - frozen or unexpected:
        raise CheckpointError(f"{path}: tensors do not fit the model its metadata describes: missing "
                              f"{sorted(set(missing) - frozen)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return net.eval(), meta


def trained_state(net: DetectorNet) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint carries: all but frozen pretrained parts, which it names instead."""
    frozen = tuple(f"backbone.{name}." for name in getattr(net.backbone, "pretrained_frozen", ()))
    return {k: v for k, v in net.state_dict().items() if not k.startswith(frozen)}


def save_network(path: str | Path, net: DetectorNet, meta: CheckpointMeta) -> Path:
    """Write ``net``'s weights with ``meta``; the normalization stats are taken from the network."""
    return save_checkpoint(path, trained_state(net), meta.model_copy(update={"normalization": net.normalization()}))


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
