"""Model registry (``create_model``) and the networks registered in it."""

from synthdet.models import (  # noqa: F401  (register)
    cifake,
    clip,
    efficientnet_lite,
    enet,
    one_class,
    probe,
    residual_gap,
    resnet,
)
from synthdet.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
