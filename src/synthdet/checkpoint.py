"""The self-contained checkpoint: one ``.safetensors`` file, weights plus JSON metadata.

The metadata carries everything inference needs (model name, feature settings, crop,
normalization statistics, classes, threshold, temperature), so ``synthdet.load(path)``
takes no other flags. safetensors never unpickles, so a checkpoint from a stranger
cannot run code, and tensors load on the CPU whatever device trained them.

This module knows the file format only; :mod:`synthdet.network` builds the network a
checkpoint describes.
"""

from __future__ import annotations

import json
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from synthdet import weights
from synthdet.config import CropSize, FeatureConfig, ViewConfig
from synthdet.data.labels import CLASS_NAMES
from synthdet.version import __version__

METADATA_KEY = "synthdet"
#: 2: a model may name frozen pretrained weights it does not carry (``model.pretrained``), and a view.
FORMAT_VERSION = 2


class CheckpointError(ValueError):
    """A file that is not a loadable synthdet checkpoint; the message names it."""


class PretrainedRef(BaseModel):
    """Frozen backbone weights a checkpoint uses but does not carry: a weights key (or a path) and its sha256."""

    weights: str
    sha256: str


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    in_chans: int
    num_classes: int = 2
    options: dict[str, Any] = Field(default_factory=dict)
    pretrained: PretrainedRef | None = None


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
    view: ViewConfig | None = Field(None, description="default view for predict and evaluate")
    normalization: Normalization | None = Field(None, description="filled from the network when saved")
    class_names: list[str] = Field(default_factory=lambda: list(CLASS_NAMES))
    threshold: float = 0.5
    temperature: float = 1.0
    calibration: dict[str, Any] | None = Field(None, description="how temperature and threshold were fitted")
    training: dict[str, Any] = Field(default_factory=dict, description="config, data summary, validation metrics")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    """Write ``tensors`` (moved to the CPU) and ``meta`` atomically."""
    return _write(Path(path), {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, meta)


def rewrite_metadata(path: str | Path, meta: CheckpointMeta) -> Path:
    """Replace a checkpoint's metadata, keeping its tensors (e.g. after calibration)."""
    return _write(Path(path), read_tensors(path), meta)


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: meta.model_dump_json()})
    tmp.replace(path)  # never leave a half-written checkpoint behind
    return path


def read_metadata(path: str | Path) -> CheckpointMeta:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    raw = _safetensors_metadata(path).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without synthdet metadata")
    meta = CheckpointMeta.model_validate(json.loads(raw))
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.format_version} is newer than this synthdet ({__version__}) reads"
        )
    return meta


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(path), device="cpu")


def _safetensors_metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as fh:
            return fh.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({exc})") from None


def read_pretrained(spec: str | Path) -> dict[str, torch.Tensor]:
    """Tensors to start a model from: a known weights key (``clip_vit_b16``) or a file.

    Files: ``.safetensors``, a torch state dict (loaded weights-only: nothing is
    unpickled), a TorchScript archive such as OpenAI's released CLIP ``.pt`` (read with
    ``torch.jit.load``, which restores only TorchScript types), or a synthdet checkpoint,
    whose backbone's weights make a trained detector the start (or frozen embedding) of another.
    """
    path = weights.resolve(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pretrained weights file not found")
    if path.suffix == ".safetensors":
        state = read_tensors(path)
        if METADATA_KEY in _safetensors_metadata(path):
            state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        return state
    if _is_torchscript(path):
        return dict(torch.jit.load(str(path), map_location="cpu").state_dict())
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
    return state


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())
