"""One-class detection over a frozen embedding: Deep SVDD and Flow SVDD heads.

Trained on real images only (see :mod:`synthdet.training.one_class`): a head maps the
embedding so that real images fall inside a small hypersphere around a centre c; the
score of an image is its squared distance to c, and anything outside the radius R is
called synthetic. That needs no synthetic training data, so it cannot overfit to the
generators seen in training.

Deep SVDD (Ruff et al. 2018) uses a bias-free MLP, which cannot map every input to a
constant. Flow SVDD uses a volume-preserving flow (additive coupling layers, Jacobian
determinant 1): it can move and reshape the data but never shrink space as a whole, so
the hypersphere cannot collapse onto everything.
"""

from __future__ import annotations

import torch
from torch import nn

from synthdet.models.registry import create_model, register_model


class DeepSVDDHead(nn.Module):
    def __init__(self, dim: int, hidden: int = 128, out_dim: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden, bias=False), nn.LeakyReLU(0.1), nn.Linear(hidden, out_dim, bias=False)
        )
        self.out_dim = out_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class AdditiveCoupling(nn.Module):
    """y = (x_a, x_b + m(x_a)) with halves swapped on odd layers: volume-preserving."""

    def __init__(self, dim: int, hidden: int, swap: bool):
        super().__init__()
        self.split = dim // 2
        self.swap = swap
        fixed, moved = (dim - self.split, self.split) if swap else (self.split, dim - self.split)
        self.shift = nn.Sequential(nn.Linear(fixed, hidden), nn.ReLU(), nn.Linear(hidden, moved))
        nn.init.zeros_(self.shift[-1].weight)  # start as the identity map
        nn.init.zeros_(self.shift[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, : self.split], x[:, self.split :]
        if self.swap:
            return torch.cat([a + self.shift(b), b], dim=1)
        return torch.cat([a, b + self.shift(a)], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        a, b = y[:, : self.split], y[:, self.split :]
        if self.swap:
            return torch.cat([a - self.shift(b), b], dim=1)
        return torch.cat([a, b - self.shift(a)], dim=1)


class FlowSVDDHead(nn.Module):
    def __init__(self, dim: int, layers: int = 4, hidden: int = 256):
        super().__init__()
        self.layers = nn.ModuleList(AdditiveCoupling(dim, hidden, swap=i % 2 == 1) for i in range(layers))
        self.out_dim = dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            z = layer(z)
        return z

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class OneClassNet(nn.Module):
    """Frozen embedder + trainable head + hypersphere (centre, radius, logit scale).

    Outputs two logits, (0, (d^2 - R^2) / scale), so P(synthetic) = sigmoid of the scaled
    distance beyond the radius and 0.5 sits exactly on the sphere.
    """

    def __init__(self, embedder: nn.Module, head: nn.Module):
        super().__init__()
        self.embedder = embedder
        for p in self.embedder.parameters():
            p.requires_grad_(False)
        self.head = head
        self.register_buffer("center", torch.zeros(head.out_dim))
        self.register_buffer("radius2", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))
        self.num_features = head.out_dim

    def train(self, mode: bool = True) -> "OneClassNet":
        super().train(mode)
        self.embedder.eval()  # frozen: batch-norm statistics and dropout stay as trained
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.embedder.forward_features(x)
        return self.head(z)

    def distance2(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.forward_features(x) - self.center) ** 2).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outside = (self.distance2(x) - self.radius2) / self.scale
        return torch.stack([torch.zeros_like(outside), outside], dim=1)

    def distance2_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Squared distances behind logits this head produced (the inverse of :meth:`forward`)."""
        return logits[:, 1] * self.scale + self.radius2


def _embedder(in_chans: int, backbone: str, backbone_options: dict | None, pretrained) -> nn.Module:
    return create_model(backbone, in_chans=in_chans, num_classes=2, pretrained=pretrained, **(backbone_options or {}))


def _two_classes(num_classes: int) -> None:
    if num_classes != 2:
        raise ValueError("one-class heads output two logits (real, synthetic); num_classes must be 2")


@register_model(owns_pretrained=True, one_class=True)
def deep_svdd(in_chans: int = 3, num_classes: int = 2, backbone: str = "resnet18",
              backbone_options: dict | None = None, hidden: int = 128, out_dim: int = 32,
              pretrained=None) -> OneClassNet:
    """Deep SVDD head (bias-free MLP) over a frozen embedding; trained on real images only."""
    _two_classes(num_classes)
    embedder = _embedder(in_chans, backbone, backbone_options, pretrained)
    return OneClassNet(embedder, DeepSVDDHead(embedder.num_features, hidden, out_dim))


@register_model(owns_pretrained=True, one_class=True)
def flow_svdd(in_chans: int = 3, num_classes: int = 2, backbone: str = "resnet18",
              backbone_options: dict | None = None, layers: int = 4, hidden: int = 256,
              pretrained=None) -> OneClassNet:
    """Flow SVDD head (additive coupling flow, volume-preserving) over a frozen embedding."""
    _two_classes(num_classes)
    embedder = _embedder(in_chans, backbone, backbone_options, pretrained)
    return OneClassNet(embedder, FlowSVDDHead(embedder.num_features, layers, hidden))
