"""One name -> one constructor (the timm pattern), plus fitting a pretrained state dict into a model.

Each registered constructor takes ``in_chans`` and ``num_classes`` (and its own keyword
options) and returns an ``nn.Module`` mapping B x in_chans x H x W to B x num_classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import nn


@dataclass(frozen=True)
class ModelEntry:
    constructor: Callable[..., nn.Module]
    first_conv: str | None  # state-dict prefix of the input conv, adapted when in_chans differs
    classifier: str | None  # prefix of the output layer, dropped when num_classes differs
    description: str
    owns_pretrained: bool = False  # the constructor takes ``pretrained`` itself (wrapper models)
    one_class: bool = False  # trained on real images only (synthdet.training.one_class)
    frozen_embedding: bool = False  # a head on a frozen backbone, trained on cached embeddings
    # renames other public key layouts (OpenAI, Hugging Face full models) to the model's own
    adapt_state: Callable[[dict], dict] | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str | None = None,
    *,
    first_conv: str | None = None,
    classifier: str | None = None,
    owns_pretrained: bool = False,
    one_class: bool = False,
    frozen_embedding: bool = False,
    adapt_state: Callable[[dict], dict] | None = None,
):
    """Decorator registering a constructor under ``name`` (default: the function name)."""

    def decorator(fn):
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name or fn.__name__] = ModelEntry(
            fn, first_conv, classifier, doc[0] if doc else "", owns_pretrained, one_class, frozen_embedding,
            adapt_state,
        )
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {list_models()}")
    return _REGISTRY[name]


def create_model(
    name: str, in_chans: int = 3, num_classes: int = 2, pretrained: Mapping[str, torch.Tensor] | None = None,
    **options,
) -> nn.Module:
    """Build a registered model, starting from the ``pretrained`` state dict when one is given.

    Weights are read elsewhere (:func:`synthdet.checkpoint.read_pretrained`): models never
    touch files, so the registry stays free of formats and nothing here downloads.
    """
    entry = model_entry(name)
    if entry.owns_pretrained:
        return entry.constructor(in_chans=in_chans, num_classes=num_classes, pretrained=pretrained, **options)
    model = entry.constructor(in_chans=in_chans, num_classes=num_classes, **options)
    if pretrained is not None:
        load_pretrained(model, dict(pretrained), entry, in_chans)
    return model


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Reuse RGB filters for ``in_chans`` inputs keeping the activation scale.

    One channel: sum of the RGB filters. More: the RGB filters repeated cyclically and
    scaled by 3 / in_chans, so a response to an input of ones matches the original.
    """
    out_ch, old_in = weight.shape[:2]
    if old_in == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // old_in)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (old_in / in_chans)


def load_pretrained(model: nn.Module, state: dict[str, torch.Tensor], entry: ModelEntry, in_chans: int) -> None:
    """Load matching weights, adapting the input conv and skipping a mis-sized classifier."""
    if entry.adapt_state is not None:
        state = entry.adapt_state(state)
    own = model.state_dict()
    if entry.first_conv and f"{entry.first_conv}.weight" in state:
        key = f"{entry.first_conv}.weight"
        state[key] = adapt_input_conv(state[key], in_chans)
    if entry.classifier:
        for key in [k for k in state if k.startswith(entry.classifier + ".")]:
            if key in own and own[key].shape != state[key].shape:
                del state[key]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state
             if k in own and state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"pretrained weights do not fit: wrong shapes (file vs model) {wrong[:3]}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = {k for k in missing if entry.classifier and k.startswith(entry.classifier + ".")}
    if set(missing) - allowed_missing or unexpected:
        raise ValueError(
            f"pretrained weights do not fit: missing {sorted(set(missing) - allowed_missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
