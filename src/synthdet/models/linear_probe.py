"""Linear probe: a frozen backbone with a trained linear head (the CLIP-feature detectors' recipe).

The backbone is any registry model with local weights (``model.pretrained``), including
``open_clip`` when the optional open_clip package and a local weights file are present.
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


class OpenClipImageEncoder(nn.Module):
    """An open_clip image tower as a registry backbone (``forward_features`` = CLIP embedding).

    Expects 3-channel RGB at the model's input size (224 for ViT-B-32); synthdet's measured
    per-channel standardization stands in for CLIP's fixed mean/std.
    """

    def __init__(self, model_name: str, weights: str, num_classes: int):
        super().__init__()
        try:
            import open_clip
        except ImportError as exc:
            raise ImportError("the open_clip backbone needs the optional package: pip install open_clip_torch") from exc
        self.clip = open_clip.create_model(model_name, pretrained=str(weights))
        self.num_features = self.clip.visual.output_dim
        self.fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


@register_model(owns_pretrained=True)
def open_clip(in_chans: int = 3, num_classes: int = 2, model_name: str = "ViT-B-32", pretrained=None):
    """An open_clip image encoder from a local weights file (optional extra)."""
    if in_chans != 3 or pretrained is None:
        raise ValueError("open_clip needs rgb features (3 channels) and model.pretrained: a local weights file")
    return OpenClipImageEncoder(model_name, pretrained, num_classes)
