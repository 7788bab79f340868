"""The self-contained checkpoint: one ``.safetensors`` file, weights plus JSON metadata.

The metadata carries everything inference needs (model name, feature settings, crop,
normalization statistics, classes, threshold, temperature), so ``synthdet.load(path)``
takes no other flags. safetensors never unpickles, so a checkpoint from a stranger
cannot run code, and tensors load on the CPU whatever device trained them.

Nothing in a checkpoint is trusted: the metadata is validated against ranges when read
(a temperature of 0 or a threshold of 2 would silently give NaN or flipped verdicts),
and :func:`synthdet.network.load_network` checks the tensors against the model the
metadata describes. Every problem is one :class:`CheckpointError` naming the file.

This module knows the file format only; :mod:`synthdet.network` builds the network a
checkpoint describes.
"""

from __future__ import annotations

import json
import math
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from synthdet import weights
from synthdet.config import CropSize, FeatureConfig, ModelName, ViewConfig
from synthdet.data.labels import CLASS_NAMES
from synthdet.features import FeatureExtractor
from synthdet.rundir import atomic_path
from synthdet.version import __version__

METADATA_KEY = "synthdet"
#: 2: a model may name frozen pretrained weights it does not carry (``model.pretrained``), and a view.
#: 3: those weights are named by the sha256 of their tensors, not of their file.
FORMAT_VERSION = 3
#: Crop sides a checkpoint may ask for: a forward pass at 4096x4096 already needs gigabytes.
CROP_LIMITS = (8, 4096)


class CheckpointError(ValueError):
    """A file that is not a loadable synthdet checkpoint; the message names it."""


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


class PretrainedRef(BaseModel):
    """Frozen backbone weights a checkpoint uses but does not carry: a weights key (or a path) and
    the sha256 of its tensors (:func:`synthdet.weights.tensors_sha256`), which no file layout changes.

    ``sha256`` is what checkpoints of format 2 recorded instead: the sha256 of the weights file.
    """

    model_config = ConfigDict(extra="forbid")
    weights: str
    tensors_sha256: str | None = None
    sha256: str | None = Field(None, description="format 2: the file's sha256 (read, never written)")

    @field_validator("tensors_sha256", "sha256")
    @classmethod
    def _hex_digest(cls, digest: str | None) -> str | None:
        if digest is not None and not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            raise ValueError(f"must be a sha256 hex digest (64 lowercase hex digits), got {digest!r}")
        return digest

    @model_validator(mode="after")
    def _identified(self) -> "PretrainedRef":
        if self.tensors_sha256 is None and self.sha256 is None:
            raise ValueError("names no digest of its weights (tensors_sha256)")
        return self

    @property
    def identity(self) -> str:
        """The digest that identifies these weights: their tensors' sha256, which a format-2 file
        sha256 of known weights maps to; a format-2 checkpoint on a weights file keeps the file's."""
        if self.tensors_sha256 is not None:
            return self.tensors_sha256
        if self.weights in weights.KNOWN_WEIGHTS:
            known = weights.known(self.weights)
            if self.sha256 in known.legacy_file_sha256:
                return known.tensors_sha256
        return self.sha256


def pretrained_ref(spec: str | Path) -> PretrainedRef:
    """How a checkpoint names frozen weights it does not carry: their key (or path) and tensors' sha256."""
    if str(spec) in weights.KNOWN_WEIGHTS:
        weights.resolve(spec)  # installed, or a message saying how to install them
        return PretrainedRef(weights=str(spec), tensors_sha256=weights.known(str(spec)).installed_tensors_sha256())
    return PretrainedRef(weights=str(spec), tensors_sha256=weights.tensors_sha256(read_pretrained(spec)))


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: ModelName
    in_chans: int
    num_classes: int = 2
    options: dict[str, Any] = Field(default_factory=dict)
    pretrained: PretrainedRef | None = None

    @field_validator("num_classes")
    @classmethod
    def _two(cls, n: int) -> int:
        if n != len(CLASS_NAMES):
            raise ValueError(f"must be {len(CLASS_NAMES)} (real, synthetic), got {n}")
        return n


class Normalization(BaseModel):
    mean: list[float]
    std: list[float]

    @model_validator(mode="after")
    def _usable(self) -> "Normalization":
        """Finite means, and standard deviations > 0: a zero std divides every feature by zero."""
        if len(self.mean) != len(self.std):
            raise ValueError(f"{len(self.mean)} means but {len(self.std)} standard deviations")
        for value in self.mean:
            _finite(value, "every mean")
        if not all(math.isfinite(s) and s > 0 for s in self.std):
            raise ValueError(f"every std must be finite and > 0, got {self.std}")
        return self


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

    @field_validator("threshold")
    @classmethod
    def _probability(cls, t: float) -> float:
        if not 0 < _finite(t, "threshold") < 1:
            raise ValueError(f"must be in (0, 1), got {t}")
        return t

    @field_validator("temperature")
    @classmethod
    def _positive(cls, t: float) -> float:
        if _finite(t, "temperature") <= 0:
            raise ValueError(f"must be > 0 (0 gives NaN, a negative value flips every verdict), got {t}")
        return t

    @field_validator("crop")
    @classmethod
    def _crop_within_limits(cls, crop: tuple[int, int]) -> tuple[int, int]:
        low, high = CROP_LIMITS
        if not all(low <= side <= high for side in crop):
            raise ValueError(f"each side must be within {low}..{high} pixels, got {crop[1]}x{crop[0]}")
        return crop

    @field_validator("class_names")
    @classmethod
    def _real_then_synthetic(cls, names: list[str]) -> list[str]:
        if names != list(CLASS_NAMES):
            raise ValueError(f"must be {list(CLASS_NAMES)} (synthdet's label order), got {names}")
        return names

    @model_validator(mode="after")
    def _channels_agree(self) -> "CheckpointMeta":
        """The model's input channels and the normalization match what the features produce."""
        channels = FeatureExtractor(self.features.representations, self.features.highpass_radius,
                                    self.features.grayscale).out_channels
        if self.model.in_chans != channels:
            raise ValueError(f"model.in_chans is {self.model.in_chans}, but features "
                             f"{self.features.representations} give {channels} channels")
        if self.normalization is not None and len(self.normalization.mean) != channels:
            raise ValueError(f"normalization has {len(self.normalization.mean)} channels, the features give {channels}")
        return self


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    """Write ``tensors`` (moved to the CPU) and ``meta`` atomically."""
    return _write(Path(path), {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, meta)


def rewrite_metadata(path: str | Path, meta: CheckpointMeta) -> Path:
    """Replace a checkpoint's metadata, keeping its tensors (e.g. after calibration)."""
    return _write(Path(path), read_tensors(path), meta)


def _write(path: Path, tensors: dict[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    """Validate ``meta`` (updates by ``model_copy`` skip validation) and write it with ``tensors`` atomically."""
    text = parse_metadata(meta.model_dump_json(), path).model_dump_json()
    with atomic_path(path) as tmp:  # never leave a half-written checkpoint behind
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    return path


def parse_metadata(text: str, path: str | Path) -> CheckpointMeta:
    """Validated metadata from its JSON text; any problem is a :class:`CheckpointError` naming ``path``."""
    try:
        raw = json.loads(text)
        _say_explicitly(raw, path)
        meta = CheckpointMeta.model_validate(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata is not valid JSON ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'metadata'}: {e['msg']}" for e in exc.errors())
        raise CheckpointError(f"{path}: invalid metadata: {problems}") from None
    except (TypeError, ValueError) as exc:  # e.g. a feature setting its extractor refuses
        raise CheckpointError(f"{path}: invalid metadata: {exc}") from None
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.format_version} is newer than this synthdet ({__version__}) reads"
        )
    return meta


#: Metadata a checkpoint must state, because a default in their place would change every score:
#: how the input is normalized, the decision threshold, the temperature, the class order, and
#: (from format 2) the view. synthdet writes every one of them in every checkpoint it saves.
EXPLICIT_FIELDS = ("normalization", "threshold", "temperature", "class_names")


def _say_explicitly(raw, path: str | Path) -> None:
    """Refuse metadata that leaves out a field whose default would silently change the output."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: metadata must be a JSON object")
    missing = [key for key in EXPLICIT_FIELDS if raw.get(key) is None]
    if isinstance(raw.get("format_version"), int) and raw["format_version"] >= 2 and "view" not in raw:
        missing.append("view")
    if missing:
        raise CheckpointError(f"{path}: invalid metadata: {', '.join(missing)} missing or null; a checkpoint must "
                              f"state them (a default would change every score), so it is refused")


def read_metadata(path: str | Path) -> CheckpointMeta:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    raw = _safetensors_metadata(path).get(METADATA_KEY)
    if raw is None:
        raise CheckpointError(f"{path}: safetensors file without synthdet metadata")
    return parse_metadata(raw, path)


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{path}: cannot read the tensors ({exc})") from None


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
