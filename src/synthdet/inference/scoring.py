"""The one batched scoring loop used by validation, evaluation, benchmark and predict."""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from tqdm.auto import tqdm

from synthdet.data.loader import Batch
from synthdet.runtime import autocast


def iter_logits(
    net: torch.nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    precision: str = "fp32",
    progress: str | None = None,
    max_views: int | None = None,
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Yield each batch with the logits of its views (float32, on the CPU).

    Failed files ride along in the batch. ``max_views`` caps how many views (tiles) go
    through the network at once, so a batch of tiled images never needs more activation
    memory than an ordinary batch.
    """
    net.eval()
    with torch.inference_mode():
        for batch in tqdm(loader, desc=progress, disable=progress is None, unit="batch", leave=False):
            if len(batch) == 0:
                yield batch, torch.empty(0, 2)
                continue
            yield batch, forward_views(net, batch.images, device, max_views, precision)


#: Pixels per forward pass on the CPU. Larger passes do not run faster there (fp32 ResNet-18
#: on 2 cores: 1.6-2.4 images/s at 640x480 and 10-15 at 224x224 for passes of 1 to 32 views,
#: no trend beyond run-to-run noise), but their activation memory grows with every view
#: (about 45 MB per 640x480 view, measured as peak RSS), so the CPU runs about one 640x480
#: view, or 390 32x32 views, at a time. GPUs want whole batches.
CPU_PIXELS_PER_PASS = 400_000


def forward_views(net: torch.nn.Module, images: torch.Tensor, device: torch.device, max_views: int | None = None,
                  precision: str = "fp32") -> torch.Tensor:
    """Logits of ``images`` (float32, CPU), at most ``max_views`` through the network at once."""
    return torch.cat([out.float().cpu() for out in run_in_chunks(net, images, device, max_views, precision)])


def run_in_chunks(fn, images: torch.Tensor, device: torch.device, max_views: int | None = None,
                  precision: str = "fp32") -> Iterator:
    """``fn`` applied to at most ``max_views`` images at a time, on ``device``, under ``precision``.

    On the CPU, passes are further capped at ``CPU_PIXELS_PER_PASS`` pixels.
    """
    views = max_views or max(len(images), 1)
    if device.type == "cpu" and images.dim() == 4:
        views = max(1, min(views, CPU_PIXELS_PER_PASS // (images.shape[-1] * images.shape[-2])))
    with torch.inference_mode():
        for chunk in images.split(views):
            with autocast(device, precision):
                yield fn(chunk.to(device, non_blocking=True))


def log_odds(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log P(synthetic) / P(real) after temperature scaling: ranks images without rounding to 0 or 1."""
    return (logits[:, 1] - logits[:, 0]) / temperature


def probability_synthetic(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax probability of class 1 (synthetic) after temperature scaling."""
    return torch.softmax(logits / temperature, dim=1)[:, 1]
