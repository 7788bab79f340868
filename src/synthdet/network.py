"""The full network a checkpoint holds: features -> normalization -> backbone, built in one place.

:func:`build_network` is the only constructor: training, checkpoint loading, one-class
heads and importers all call it, so a feature setting cannot reach the network one way
in training and another at inference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

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


def network_from_meta(meta: CheckpointMeta) -> DetectorNet:
    """An untrained network with the architecture and preprocessing the metadata describes."""
    return build_network(meta.features, meta.model.name, meta.model.options, num_classes=meta.model.num_classes,
                         normalization=meta.normalization)


def load_network(path: str | Path) -> tuple[DetectorNet, CheckpointMeta]:
    """Network (on the CPU, in eval mode) and metadata from a checkpoint file.

    The tensors are checked against the model the metadata describes (names, shapes,
    dtypes, finite values); every mismatch is one :class:`CheckpointError`.
    """
    meta = read_metadata(path)
    tensors = read_tensors(path)
    if meta.model.options:
        # Options can size a model (a head's width...): check them first on torch's meta
        # device, which allocates nothing. Without options the registry's defaults bound the
        # size, and the meta device's first use (about 70 MB of imports) is not worth it.
        with torch.device("meta"):
            _check_tensors(path, tensors, _network(meta, path))
    net = _network(meta, path)
    _check_tensors(path, tensors, net)
    net.load_state_dict(tensors)
    return net.eval(), meta


def _network(meta: CheckpointMeta, path: str | Path) -> DetectorNet:
    try:
        return network_from_meta(meta)
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # e.g. model options its constructor refuses
        raise CheckpointError(f"{path}: cannot build the model its metadata describes ({exc})") from None


def _check_tensors(path: str | Path, tensors: dict[str, torch.Tensor], net: DetectorNet) -> None:
    problems = tensor_problems(tensors, net.state_dict())
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise CheckpointError(f"{path}: tensors do not fit the model its metadata describes: {shown}")


def tensor_problems(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """What keeps ``tensors`` from loading into a model whose state dict looks like ``expected``.

    Names, shapes and the kind of dtype must match (a float16 file may fill float32
    weights, integers may not), and floating values must be finite.
    """
    problems = [f"missing {name}" for name in expected if name not in tensors]
    problems += [f"unexpected {name}" for name in tensors if name not in expected]
    for name in expected.keys() & tensors.keys():
        have, want = tensors[name], expected[name]
        if have.shape != want.shape:
            problems.append(f"{name} has shape {tuple(have.shape)}, the model needs {tuple(want.shape)}")
        elif have.dtype.is_floating_point != want.dtype.is_floating_point:
            problems.append(f"{name} is {have.dtype}, the model needs {want.dtype}")
        elif have.dtype.is_floating_point and not torch.isfinite(have).all():
            problems.append(f"{name} holds NaN or infinite values")
    return sorted(problems)


def save_network(path: str | Path, net: DetectorNet, meta: CheckpointMeta) -> Path:
    """Write ``net``'s weights with ``meta``; the normalization stats are taken from the network."""
    return save_checkpoint(path, net.state_dict(), meta.model_copy(update={"normalization": net.normalization()}))


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
