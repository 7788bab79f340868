"""Turn detectors released by other projects into synthdet checkpoints.

Once imported, a peer model runs through the same evaluate / predict / serve paths as
synthdet's own, so comparisons use one pipeline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from synthdet.checkpoint import CheckpointMeta, ModelSpec, Normalization, read_pretrained
from synthdet.config import FeatureConfig
from synthdet.network import build_network, save_network

AICS_LAYERS = ("conv1", "conv2", "fc1", "fc2")


def import_aics_cifake(weights: str | Path, out: str | Path, attention: bool = False) -> Path:
    """A jshrdt/aics-project CIFAKE CNN state dict as a synthdet checkpoint.

    The peer scales RGB to [-1, 1] (x / 255, then Normalize(0.5, 0.5)) and outputs one
    logit z with sigmoid(z) = P(real). Here that becomes rgb features with mean 0.5 and
    std 0.5, and two logits (0, -z), whose softmax gives P(synthetic) = sigmoid(-z).
    ``attention`` selects the SRM variant (the released files hold its keys either way).
    """
    weights = Path(weights)
    state = read_pretrained(weights)
    name = "cifake_cnn_srm" if attention else "cifake_cnn"
    features = FeatureConfig(representations=["rgb"])
    net = build_network(features, name, normalization=Normalization(mean=[0.5] * 3, std=[0.5] * 3))
    keep = AICS_LAYERS + (("attend",) if attention else ())
    mapped = {k: v for k, v in state.items() if k.split(".")[0] in keep}
    z_weight, z_bias = state["fc3.weight"], state["fc3.bias"]  # 1 x 84, 1
    mapped["fc3.weight"] = torch.cat([torch.zeros_like(z_weight), -z_weight])
    mapped["fc3.bias"] = torch.cat([torch.zeros_like(z_bias), -z_bias])
    net.backbone.load_state_dict(mapped)
    meta = CheckpointMeta(
        model=ModelSpec(name=name, in_chans=3),
        features=features,
        crop=(32, 32),
        training={
            "imported_from": "jshrdt/aics-project (CIFAKE, 10 epochs)",
            "weights_file": weights.name,
            "weights_sha1": hashlib.sha1(weights.read_bytes()).hexdigest(),
        },
    )
    return save_network(out, net, meta)
