"""Device choice, seeding and reduced precision, shared by training and inference."""

from __future__ import annotations

import contextlib
import functools
import platform
import random
from pathlib import Path

import numpy as np
import torch

from synthdet.config import ConfigError

PRECISIONS = ("fp32", "bf16")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; a device this machine lacks is a :class:`ConfigError`."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available here; use --device cpu (or auto)")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {spec!r} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"device {spec!r} requested but Apple MPS is not available here; use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {spec!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


#: The CPU features that decide how fast a model runs here: what a measurement reports beside its figures.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def machine_summary() -> str:
    """This machine in one line for a benchmark's output: architecture, torch threads and version, and
    which of :data:`SPEED_FLAGS` the CPU has (timings compare only between runs on one such line)."""
    flags = [f for f in SPEED_FLAGS if f in cpu_flags()]
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}; CPU flags: {', '.join(flags) or 'none of ' + ', '.join(SPEED_FLAGS)}")


def resolve_precision(precision: str, device: torch.device, frozen_backbone: bool) -> str:
    """``auto``: bf16 for frozen-backbone probes (ViTs) where bfloat16 is native, fp32 otherwise.

    The probes' verdicts were measured not to move (benchmarks/default_model.py); CNNs
    trained in fp32 keep fp32 unless asked.
    """
    if precision == "auto":
        return "bf16" if frozen_backbone and native_bf16(device) else "fp32"
    return check_precision(precision)


def native_bf16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products run in hardware here (never emulated: that is slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def training_precision(amp: bool, device: torch.device) -> str:
    """``train.amp`` means bfloat16 on a GPU that has it; CPUs train in fp32."""
    return "bf16" if amp and device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def autocast(device: torch.device, precision: str = "fp32"):
    """The one precision switch: ``bf16`` runs the backbone under bfloat16 autocast.

    Features stay float32 (see FeatureExtractor). bfloat16 pays only where it is native
    (GPUs; CPUs with AVX512-BF16 or AMX); elsewhere it is emulated and slower than fp32.
    It also moves probabilities slightly, so fp32 is the default for inference;
    benchmarks/throughput.py measures both effects on the machine at hand.
    """
    if check_precision(precision) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
