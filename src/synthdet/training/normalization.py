"""Per-channel feature statistics, measured before training on raw (unnormalized) features."""

from __future__ import annotations

import itertools

import torch

from synthdet.network import DetectorNet


def measure_feature_stats(
    net: DetectorNet, loader, device: torch.device, max_batches: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and std of each feature channel over up to ``max_batches`` training batches.

    Reads ``net.features`` output directly, never the normalized input, so the stats
    describe the data and not a previous normalization. Accumulates in float64.
    Returns (mean, std, number of images seen).
    """
    total = sq_total = None
    count, images_seen = 0, 0
    # no_grad, not inference_mode: a streaming loader (shards, workers=0) can hand tensors made
    # while measuring to the training steps that follow, and autograd refuses inference tensors
    with torch.no_grad():
        for batch in itertools.islice(loader, max_batches):
            if len(batch) == 0:
                continue
            feats = net.features(batch.images.to(device)).double()
            dims = (0, 2, 3)
            s, sq = feats.sum(dim=dims), (feats * feats).sum(dim=dims)
            total = s if total is None else total + s
            sq_total = sq if sq_total is None else sq_total + sq
            count += feats.shape[0] * feats.shape[2] * feats.shape[3]
            images_seen += feats.shape[0]
    if count == 0:
        raise RuntimeError("no readable training images to measure normalization statistics on")
    mean = total / count
    var = (sq_total / count - mean * mean).clamp_min(0)
    return mean.float().cpu(), var.sqrt().float().cpu(), images_seen
