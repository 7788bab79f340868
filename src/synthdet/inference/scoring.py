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
    amp: bool = True,
    progress: str | None = None,
) -> Iterator[tuple[Batch, torch.Tensor]]:
    """Yield each batch with its logits (float32, on the CPU); failed files ride along in the batch."""
    net.eval()
    with torch.inference_mode():
        for batch in tqdm(loader, desc=progress, disable=progress is None, unit="batch", leave=False):
            if len(batch) == 0:
                yield batch, torch.empty(0, 2)
                continue
            images = batch.images.to(device, non_blocking=True)
            with autocast(device, amp):
                logits = net(images)
            yield batch, logits.float().cpu()


def probability_synthetic(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax probability of class 1 (synthetic) after temperature scaling."""
    return torch.softmax(logits.float() / temperature, dim=1)[:, 1]
