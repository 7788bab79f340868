"""Model registry (``create_model``) and the networks registered in it."""

from synthdet.models import cifake, efficientnet_lite, enet, linear_probe, one_class, residual_gap, resnet  # noqa: F401  (register)
from synthdet.models.network import DetectorNet, build_network, check_crop_fits
from synthdet.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["DetectorNet", "build_network", "check_crop_fits", "create_model", "list_models", "model_entry", "register_model"]
