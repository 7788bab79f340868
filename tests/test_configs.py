"""Every shipped configuration validates, and a smoke run of each works on toy data."""

from pathlib import Path

import pytest

from synthdet.config import load_config
from synthdet.models import model_entry
from synthdet.pipeline import train
from synthdet.weights import KNOWN_WEIGHTS

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SEED_SYSTEMS = {"maritime_fourier_resnet18", "spectral9_resnet18", "cifake_cnn", "cifake_cnn_srm",
                "residual_gap_cnn", "enet_flow_svdd"}
BEYOND_SEED = {"cifake_resnet", "clip_probe", "default_detector"}  # synthdet's own configurations


def test_every_seed_system_has_a_config():
    assert {p.stem for p in CONFIGS} == SEED_SYSTEMS | BEYOND_SEED


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_validates(path):
    config = load_config(path)
    assert config.name == path.stem
    model_entry(config.model.name)  # registered
    for backbone in [config.model.options.get("backbone")] if "backbone" in config.model.options else []:
        model_entry(backbone)


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_smoke_run_on_toy_data(path, toy_sources, tmp_path, pretrained):
    overrides = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_size=4", "train.norm_batches=1",
                 "one_class.epochs=1", "data.workers=0", f"output_dir={tmp_path}"]
    config = load_config(path, overrides)
    if config.model.pretrained in KNOWN_WEIGHTS:
        pretrained(config.model.pretrained)
    config.data.sources = load_config(None, [f"data.sources={[{**s, 'max_images': 8} for s in toy_sources]}"]).data.sources
    result = train(config, progress=False)
    assert result.best_checkpoint.is_file()
    assert result.history[0]["train_images"] > 0 if result.history else result.best_val["n"] > 0
