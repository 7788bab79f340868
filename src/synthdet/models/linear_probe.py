"""Linear probe: a frozen backbone with a trained linear head (the CLIP-feature detectors' recipe).

The backbone is any registry model with local weights (``model.pretrained``).
"""

from __future__ import annotations

import torch
from torch import nn

from synthdet.models.registry import create_model, register_model


class LinearProbe(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__()
        self.backbone = backbone
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.head = nn.Linear(backbone.num_features, num_classes)
        self.num_features = backbone.num_features

    def train(self, mode: bool = True) -> "LinearProbe":
        super().train(mode)
        self.backbone.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model(owns_pretrained=True)
def linear_probe(in_chans: int = 3, num_classes: int = 2, backbone: str = "resnet50",
                 backbone_options: dict | None = None, pretrained=None) -> LinearProbe:
    """Frozen backbone (weights from a local file) + trained linear classifier."""
    frozen = create_model(backbone, in_chans=in_chans, num_classes=num_classes, pretrained=pretrained,
                          **(backbone_options or {}))
    return LinearProbe(frozen, num_classes)
