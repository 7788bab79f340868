"""The one batched scoring loop used by validation, evaluation, benchmark and predict."""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from tqdm.auto import tqdm

from synthdet.data.loader import Batch
from synthdet.runtime import autocast, inference_precision


def iter_logits(
    net: torch.nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    amp: bool = True,
    progress: str | None = None,
    max_views: int | None = None,
    precision: str = "fp32",
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
            yield batch, forward_views(net, batch.images, device, max_views, precision, amp)


def forward_views(net: torch.nn.Module, images: torch.Tensor, device: torch.device, max_views: int | None = None,
                  precision: str = "fp32", amp: bool = True) -> torch.Tensor:
    """Logits of ``images`` (float32, CPU), at most ``max_views`` through the network at once."""
    logits = []
    with torch.inference_mode():
        for chunk in images.split(max_views or max(len(images), 1)):
            with autocast(device, amp), inference_precision(device, precision):
                logits.append(net(chunk.to(device, non_blocking=True)).float().cpu())
    return torch.cat(logits)


def probability_synthetic(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax probability of class 1 (synthetic) after temperature scaling."""
    return torch.softmax(logits.float() / temperature, dim=1)[:, 1]
