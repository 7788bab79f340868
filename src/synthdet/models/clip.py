"""CLIP ViT image encoder in plain torch, with Hugging Face ``CLIPVisionModelWithProjection`` keys.

The frozen CLIP image tower is what the detectors that generalize stand on (UnivFD, Ojha
et al. 2023; RINE, Koutlis & Papadopoulos 2024). Parameter names match Hugging Face's
(``vision_model.encoder.layers.N.self_attn.q_proj.weight``, ``visual_projection.weight``),
so a ``model.safetensors`` of ``openai/clip-vit-base-patch16`` loads as it is; OpenAI's
own state dicts are renamed by :func:`from_openai_state_dict`.

``forward_features`` gives the projected image embedding; ``forward_tokens`` also gives
the CLS token after every block (RINE's intermediate representations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthdet.models.registry import register_model

#: CLIP's input standardization (OpenAI's training statistics), for pixels in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipVisionSpec:
    patch: int
    width: int
    layers: int
    heads: int
    embed_dim: int
    image_size: int = 224


CLIP_VARIANTS = {
    "b32": ClipVisionSpec(patch=32, width=768, layers=12, heads=12, embed_dim=512),
    "b16": ClipVisionSpec(patch=16, width=768, layers=12, heads=12, embed_dim=512),
    "l14": ClipVisionSpec(patch=14, width=1024, layers=24, heads=16, embed_dim=768),
}


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ClipAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(attended.transpose(1, 2).reshape(batch, tokens, width))


class ClipMLP(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.fc1 = nn.Linear(width, 4 * width)
        self.activation_fn = QuickGELU()
        self.fc2 = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(x)))


class ClipEncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.self_attn = ClipAttention(width, heads)
        self.layer_norm1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = ClipMLP(width)
        self.layer_norm2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, spec: ClipVisionSpec):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(spec.width))
        self.patch_embedding = nn.Conv2d(3, spec.width, spec.patch, stride=spec.patch, bias=False)
        self.position_embedding = nn.Embedding((spec.image_size // spec.patch) ** 2 + 1, spec.width)
        self.grid = spec.image_size // spec.patch

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # B x N x width
        grid = int(patches.shape[1] ** 0.5)
        if grid * grid != patches.shape[1] or grid != self.grid:
            raise ValueError(
                f"CLIP takes {self.grid * self.patch_embedding.stride[0]}x{self.grid * self.patch_embedding.stride[0]}"
                f" inputs, got {pixels.shape[-1]}x{pixels.shape[-2]}"
            )
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight


class ClipVisionTower(nn.Module):
    """The ``vision_model`` part: embeddings, pre-norm, transformer layers, post-norm."""

    def __init__(self, spec: ClipVisionSpec):
        super().__init__()
        self.embeddings = ClipEmbeddings(spec)
        self.pre_layrnorm = nn.LayerNorm(spec.width, eps=1e-5)  # (sic: Hugging Face's spelling)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(ClipEncoderLayer(spec.width, spec.heads) for _ in range(spec.layers))
        self.post_layernorm = nn.LayerNorm(spec.width, eps=1e-5)


class ClipVisionModel(nn.Module):
    """CLIP image encoder with projection, plus an optional linear classifier on the embedding.

    Inputs are CLIP-standardized RGB at the variant's image size (224).
    """

    def __init__(self, variant: str = "b16", num_classes: int = 2):
        super().__init__()
        if variant not in CLIP_VARIANTS:
            raise ValueError(f"unknown CLIP variant {variant!r}; available: {sorted(CLIP_VARIANTS)}")
        self.spec = CLIP_VARIANTS[variant]
        self.vision_model = ClipVisionTower(self.spec)
        self.visual_projection = nn.Linear(self.spec.width, self.spec.embed_dim, bias=False)
        self.num_features = self.spec.embed_dim
        # what the published weights expect of [0, 1] RGB input
        self.input_mean, self.input_std, self.input_size = CLIP_MEAN, CLIP_STD, self.spec.image_size
        self.token_dim = self.spec.width
        self.num_layers = self.spec.layers
        self.fc = nn.Linear(self.spec.embed_dim, num_classes)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(projected embedding B x embed_dim, CLS token after every block B x layers x width)."""
        tower = self.vision_model
        hidden = tower.pre_layrnorm(tower.embeddings(x))
        cls_tokens = []
        for layer in tower.encoder.layers:
            hidden = layer(hidden)
            cls_tokens.append(hidden[:, 0])
        embedding = self.visual_projection(tower.post_layernorm(hidden[:, 0]))
        return embedding, torch.stack(cls_tokens, dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tokens(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def to_hugging_face_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any public CLIP state dict as this model's keys: OpenAI's layout is renamed, and a full
    CLIP model's text tower (Hugging Face ``CLIPModel`` or OpenAI) is dropped."""
    if "visual.conv1.weight" in state:
        return from_openai_state_dict(state)
    return {k: v for k, v in state.items()
            if k.startswith(("vision_model.", "visual_projection.", "fc.")) and not k.endswith("position_ids")}


@register_model(classifier="fc", adapt_state=to_hugging_face_keys)
def clip_vit(in_chans: int = 3, num_classes: int = 2, variant: str = "b16") -> ClipVisionModel:
    """CLIP ViT image encoder (variant b32, b16 or l14), Hugging Face keys; a linear classifier on top."""
    if in_chans != 3:
        raise ValueError("clip_vit takes RGB input (features.representations: [rgb])")
    return ClipVisionModel(variant, num_classes)


def from_openai_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI CLIP keys (``visual.transformer.resblocks.N.attn.in_proj_weight``...) -> Hugging Face keys.

    Text-tower keys are dropped. The fused q/k/v projection is split in that order, and
    ``visual.proj`` (width x embed, applied as x @ proj) becomes the transposed Linear weight.
    """
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    out = {
        "vision_model.embeddings.class_embedding": visual["class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": visual["conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": visual["positional_embedding"],
        "visual_projection.weight": visual["proj"].t().contiguous(),
    }
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for p in ("weight", "bias"):
            out[f"vision_model.{ours}.{p}"] = visual[f"{theirs}.{p}"]
    blocks = sorted({int(k.split(".")[2]) for k in visual if k.startswith("transformer.resblocks.")})
    renames = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for n in blocks:
        src, dst = f"transformer.resblocks.{n}.", f"vision_model.encoder.layers.{n}."
        for p in ("weight", "bias"):
            q, k, v = visual[f"{src}attn.in_proj_{p}"].chunk(3, dim=0)
            for name, tensor in (("q_proj", q), ("k_proj", k), ("v_proj", v)):
                out[f"{dst}self_attn.{name}.{p}"] = tensor.contiguous()
            for theirs, ours in renames.items():
                out[f"{dst}{ours}.{p}"] = visual[f"{src}{theirs}.{p}"]
    return out
