"""Model registry (``create_model``) and the networks registered in it."""

from synthdet.models import resnet  # noqa: F401  (registers resnet18/34/50)
from synthdet.models.network import DetectorNet, build_network
from synthdet.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["DetectorNet", "build_network", "create_model", "list_models", "model_entry", "register_model"]
