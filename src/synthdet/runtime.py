"""Device choice, seeding and reduced precision, shared by training and inference."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

PRECISIONS = ("fp32", "bf16")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True):
    """Training's mixed precision: bfloat16 autocast on GPUs that support it, else a no-op."""
    if enabled and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def inference_precision(device: torch.device, precision: str = "fp32"):
    """Autocast for inference: ``bf16`` runs the backbone in bfloat16 (features stay float32).

    It pays only where bfloat16 is native (GPUs; CPUs with AVX512-BF16 or AMX); elsewhere
    it is emulated and slower than fp32. It also moves the probabilities slightly, so fp32
    stays the default; benchmarks/throughput.py measures both effects on the machine at hand.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
