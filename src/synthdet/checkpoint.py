"""The self-contained checkpoint: one ``.safetensors`` file, weights plus JSON metadata.

The metadata carries everything inference needs (model name, feature settings, crop,
normalization statistics, classes, threshold, temperature), so ``synthdet.load(path)``
takes no other flags. safetensors never unpickles, so a checkpoint from a stranger
cannot run code, and tensors load on the CPU whatever device trained them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from synthdet.version import __version__
from synthdet.config import CropSize, FeatureConfig
from synthdet.data.labels import CLASS_NAMES
from synthdet.features import FeatureExtractor
from synthdet.models import DetectorNet, create_model

METADATA_KEY = "synthdet"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a loadable synthdet checkpoint; the message names it."""


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    in_chans: int
    num_classes: int = 2
    options: dict[str, Any] = Field(default_factory=dict)


class Normalization(BaseModel):
    mean: list[float]
    std: list[float]


class CheckpointMeta(BaseModel):
    """What a checkpoint says about itself; unknown fields from newer versions are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    format_version: int = FORMAT_VERSION
    synthdet_version: str = __version__
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    model: ModelSpec
    features: FeatureConfig
    crop: CropSize
    normalization: Normalization | None = Field(None, description="filled from the network when saved")
    class_names: list[str] = Field(default_factory=lambda: list(CLASS_NAMES))
    threshold: float = 0.5
    temperature: float = 1.0
    calibration: dict[str, Any] | None = Field(None, description="how temperature and threshold were fitted")
    training: dict[str, Any] = Field(default_factory=dict, description="config, data summary, validation metrics")


def save_checkpoint(path: str | Path, net: DetectorNet, meta: CheckpointMeta) -> Path:
    """Write weights and metadata; the normalization stats are taken from ``net``."""
    path = Path(path)
    meta = meta.model_copy(
        update={
            "normalization": Normalization(
                mean=net.normalize.mean.flatten().tolist(), std=net.normalize.std.flatten().tolist()
            )
        }
    )
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    return _write(path, tensors, meta)


def rewrite_metadata(path: str | Path, meta: CheckpointMeta) -> Path:
    """Replace a checkpoint's metadata, keeping its tensors (e.g. after calibration)."""
    return _write(Path(path), load_file(str(path), device="cpu"), meta)


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: meta.model_dump_json()})
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def read_metadata(path: str | Path) -> CheckpointMeta:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without synthdet metadata")
    meta = CheckpointMeta.model_validate(json.loads(raw))
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.format_version} is newer than this synthdet ({__version__}) reads"
        )
    return meta


def network_from_meta(meta: CheckpointMeta) -> DetectorNet:
    """An untrained network with the architecture and preprocessing the metadata describes."""
    features = FeatureExtractor(
        meta.features.representations, meta.features.highpass_radius, meta.features.grayscale
    )
    backbone = create_model(
        meta.model.name, in_chans=meta.model.in_chans, num_classes=meta.model.num_classes, **meta.model.options
    )
    net = DetectorNet(features, backbone)
    net.normalize.set_stats(torch.tensor(meta.normalization.mean), torch.tensor(meta.normalization.std))
    return net


def load_checkpoint(path: str | Path) -> tuple[DetectorNet, CheckpointMeta]:
    """Network (on the CPU, in eval mode) and metadata from a checkpoint file."""
    meta = read_metadata(path)
    net = network_from_meta(meta)
    net.load_state_dict(load_file(str(path), device="cpu"))
    return net.eval(), meta
