"""Learning-rate schedule: linear warm-up, then a constant factor per epoch."""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, steps_per_epoch: int, warmup_epochs: float, decay: float) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    Warm-up rises linearly to exactly 1 at ``warmup_epochs``; from then on the factor is
    ``decay ** k`` in the k-th epoch after warm-up, so warm-up always ends.
    """
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    epochs_after_warmup = math.floor((step - warmup_steps) / steps_per_epoch)
    return decay**epochs_after_warmup


def make_scheduler(optimizer, steps_per_epoch: int, warmup_epochs: float, decay: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, warmup_epochs, decay)
    )
