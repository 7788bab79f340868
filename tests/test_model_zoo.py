"""Every registered model learns the toy task in a short CPU run.

Supervised models must reach >= 85% validation accuracy; the one-class heads, trained on
real images only, >= 0.9 validation ROC-AUC. Each model gets the cheapest input that lets
it learn quickly (32-64 px crops of SRM residuals or Fourier features); the frozen-
backbone one-class heads start from the session's trained ResNet-18 checkpoint as their
local weights file.
"""

import pytest
import torch

from conftest import toy_config
from synthdet.network import load_network
from synthdet.models import list_models
from synthdet.pipeline import train

pytestmark = pytest.mark.slow

SRM32 = {"representations": ["srm"], "crop": 32}
# model -> (features + crop, train overrides, model options, images per toy source)
SUPERVISED = {
    "resnet18": (SRM32, {"epochs": 4}, {}, 150),
    "resnet34": (SRM32, {"epochs": 4}, {}, 120),
    "resnet50": ({"representations": ["srm"], "crop": 48}, {"epochs": 4}, {}, 120),
    "cifake_cnn": (SRM32, {"epochs": 6, "lr": 3e-3}, {}, 150),
    "cifake_cnn_srm": (SRM32, {"epochs": 6, "lr": 3e-3}, {}, 150),
    "residual_gap_cnn": (SRM32, {"epochs": 4}, {}, 150),
    "resnet_cifar": (SRM32, {"epochs": 4}, {}, 150),
    # From scratch its 16 MBConv blocks need 64 px crops (32 px: val accuracy 0.81 after 6 epochs).
    "efficientnet_lite": ({"representations": ["srm"], "crop": 64}, {"epochs": 5}, {}, 150),
    # ENet's full-resolution branches are the costliest here: a narrower head, fewer images.
    "enet": ({"representations": ["rgb"], "crop": 64}, {"epochs": 3, "lr": 1e-3}, {"hidden": 256}, 120),
}
FROZEN_BACKBONE = {"deep_svdd", "flow_svdd"}
# Covered elsewhere: the probe trains on cached embeddings (test_probe.py); CLIP is far too
# large to train from scratch here, its weights and key layouts are tested in test_clip.py.
ELSEWHERE = {"probe", "clip_vit"}


def test_every_registered_model_is_covered_here():
    assert set(list_models()) == set(SUPERVISED) | FROZEN_BACKBONE | ELSEWHERE


def _config(toy_sources, tmp_path, name, features, train_overrides, options, per_source=150):
    sources = [{**s, "max_images": per_source} for s in toy_sources]
    config = toy_config(sources, tmp_path, **train_overrides)
    config.model.name = name
    config.model.options = options
    config.features.representations = features["representations"]
    config.data.crop = (features["crop"], features["crop"])
    return config


@pytest.mark.parametrize("name", sorted(SUPERVISED))
def test_supervised_model_learns_the_toy_task(name, toy_sources, tmp_path):
    features, overrides, options, per_source = SUPERVISED[name]
    config = _config(toy_sources, tmp_path, name, features, overrides, options, per_source)
    result = train(config, progress=False)
    assert result.best_val["accuracy"] >= 0.85, result.history


@pytest.mark.parametrize("name", ["deep_svdd", "flow_svdd"])
def test_one_class_head_trained_on_real_images_separates_the_classes(name, toy_sources, tmp_path, checkpoint):
    config = _config(toy_sources, tmp_path, name, {"representations": ["fft_mag"], "crop": 64}, {},
                     {"backbone": "resnet18"})
    config.model.pretrained = str(checkpoint)
    config.one_class.epochs = 3
    result = train(config, progress=False)
    assert result.best_val["roc_auc"] >= 0.9, result.history
    with open(result.run_dir / "splits.csv") as fh:
        assert "synthetic" in fh.read()  # the split has synthetic images; training used only the real ones
    net, meta = load_network(result.best_checkpoint)
    assert net.backbone.radius2.item() > 0 and meta.model.name == name
