"""A trained head on a frozen pretrained backbone: the recipe of the detectors that generalize.

UnivFD (Ojha et al. 2023) fits a linear classifier on CLIP's image embedding; RINE
(Koutlis & Papadopoulos 2024) uses the CLS token after every transformer block. A
``probe`` does either, or both, optionally with low-level statistics of the crop
(:mod:`synthdet.features.statistics`), under a linear or small MLP head.

The backbone is never trained, so its outputs can be computed once and cached
(:mod:`synthdet.inference.embeddings`); a checkpoint stores only the head and names the
backbone's weights (key and sha256). Input: RGB in [0, 1]; the probe applies its
backbone's own input standardization, which travels with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

from synthdet.features.statistics import LOW_LEVEL
from synthdet.models.registry import create_model, register_model

#: Backbone outputs a probe may read: the pooled/projected embedding, and CLS tokens per block.
BACKBONE_PARTS = ("final", "tokens")


class ProbeHead(nn.Module):
    """Standardize (statistics of the training embeddings), then linear or a one-hidden-layer MLP."""

    def __init__(self, dim: int, num_classes: int, kind: str = "linear", hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        if kind == "linear":
            self.classifier = nn.Linear(dim, num_classes)
        elif kind == "mlp":
            self.classifier = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                            nn.Linear(hidden, num_classes))
        else:
            raise ValueError(f"probe head must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.classifier((z - self.mean) / self.std)


class ProbeNet(nn.Module):
    """Frozen ``encoder`` -> selected parts (embedding, CLS tokens, low-level statistics) -> head."""

    #: Submodules whose weights come from the named pretrained file, never from a checkpoint.
    pretrained_frozen = ("encoder",)

    def __init__(self, encoder: nn.Module, embedding: list[str], low_level: list[str], num_classes: int,
                 head: str, hidden: int):
        super().__init__()
        unknown = [p for p in embedding if p not in BACKBONE_PARTS] + [s for s in low_level if s not in LOW_LEVEL]
        if unknown or not embedding + low_level:
            raise ValueError(f"probe parts {unknown or 'none'}: choose embedding from {BACKBONE_PARTS} "
                             f"and low_level from {sorted(LOW_LEVEL)}")
        if "tokens" in embedding and not hasattr(encoder, "forward_tokens"):
            raise ValueError(f"{type(encoder).__name__} has no per-block tokens; use embedding: [final]")
        self.encoder = encoder.eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.embedding, self.low_level = list(embedding), list(low_level)
        self.register_buffer("input_mean", torch.tensor(encoder.input_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(encoder.input_std).view(1, 3, 1, 1), persistent=False)
        self.num_features = sum(self.part_sizes()[p] for p in self.embedding + self.low_level)
        self.head = ProbeHead(self.num_features, num_classes, head, hidden)

    def part_sizes(self) -> dict[str, int]:
        sizes = {"final": self.encoder.num_features, **{k: size for k, (_, size) in LOW_LEVEL.items()}}
        if hasattr(self.encoder, "forward_tokens"):
            sizes["tokens"] = self.encoder.num_layers * self.encoder.token_dim
        return sizes

    def train(self, mode: bool = True) -> "ProbeNet":
        super().train(mode)
        self.encoder.eval()  # frozen: normalization statistics and dropout stay as published
        return self

    def embed_parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Everything the cache keeps for a view: backbone outputs and all low-level statistics (B x d each)."""
        with torch.no_grad():
            standardized = (x - self.input_mean) / self.input_std
            if hasattr(self.encoder, "forward_tokens"):
                final, tokens = self.encoder.forward_tokens(standardized)
                parts = {"final": final, "tokens": tokens.flatten(1)}
            else:
                parts = {"final": self.encoder.forward_features(standardized)}
            parts |= {name: fn(x) for name, (fn, _) in LOW_LEVEL.items()}
        return {k: v.float() for k, v in parts.items()}

    def select(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """The head's input: the configured parts, concatenated in a fixed order."""
        return torch.cat([parts[p] for p in self.embedding + self.low_level], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.select(self.embed_parts(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


@register_model(owns_pretrained=True, frozen_embedding=True)
def probe(in_chans: int = 3, num_classes: int = 2, backbone: str = "clip_vit", backbone_options: dict | None = None,
          embedding: list[str] | None = None, low_level: list[str] | None = None, head: str = "linear",
          hidden: int = 256, pretrained=None) -> ProbeNet:
    """Linear or MLP head on a frozen pretrained backbone's embedding, CLS tokens and/or low-level statistics."""
    if in_chans != 3:
        raise ValueError("a probe takes RGB input (features.representations: [rgb])")
    encoder = create_model(backbone, in_chans=3, num_classes=2, pretrained=pretrained, **(backbone_options or {}))
    return ProbeNet(encoder, embedding or ["final"], low_level or [], num_classes, head, hidden)
