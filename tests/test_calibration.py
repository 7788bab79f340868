import numpy as np
import pytest
import torch

import synthdet
from conftest import toy_config
from synthdet.network import load_network, save_network
from synthdet.data.sources import read_split_csv
from synthdet.evaluation.calibration import (calibrate, calibrate_checkpoint, expected_calibration_error,
                                             fit_temperature, threshold_for_fpr)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p.shape) < p).astype(int)  # labels drawn with exactly probability p
    assert expected_calibration_error(y, p) < 0.01
    overconfident = np.where(p >= 0.5, 0.999, 0.001)
    assert expected_calibration_error(y, overconfident) > 0.2


def test_temperature_recovers_the_factor_that_made_logits_overconfident():
    gen = torch.Generator().manual_seed(0)
    margin = torch.randn(20_000, generator=gen) * 2
    labels = (torch.rand(20_000, generator=gen) < torch.sigmoid(margin)).long()  # calibrated at T=1
    logits = torch.stack([torch.zeros_like(margin), margin], dim=1) * 4.0  # four times too confident
    assert fit_temperature(logits, labels) == pytest.approx(4.0, rel=0.1)
    result = calibrate(logits, labels)
    assert result.ece_after < result.ece_before / 3 and result.nll_after < result.nll_before


def test_threshold_for_target_fpr_is_the_smallest_that_keeps_fpr_under_target():
    labels = [0] * 100 + [1] * 100
    probs = list(np.linspace(0.0, 0.99, 100)) + [0.995] * 100
    t = threshold_for_fpr(labels, probs, 0.05)
    real = np.array(probs[:100])
    assert (real >= t).mean() <= 0.05
    assert (real >= t - 2e-6).mean() > 0.05  # a lower threshold would exceed the target
    assert threshold_for_fpr(labels, probs, 0.0) > max(real)
    assert 0.999 < threshold_for_fpr([0, 1], [1.0, 1.0], 0.01) < 1  # a checkpoint's threshold lies in (0, 1)


@pytest.mark.slow
def test_temperature_scaling_lowers_ece_of_a_deliberately_overconfident_toy_model(toy_sources, tmp_path):
    sources = [{**s, "max_images": 60} for s in toy_sources]
    config = toy_config(sources, tmp_path, epochs=2, lr=3e-3)
    config.model.name, config.data.crop = "cifake_cnn", (32, 32)
    config.features.representations = ["rgb"]  # weak on this task: it makes mistakes to be confident about
    run = synthdet.train(config, progress=False)
    net, meta = load_network(run.best_checkpoint)
    with torch.no_grad():
        net.backbone.fc3.weight.mul_(25)
        net.backbone.fc3.bias.mul_(25)
    overconfident = save_network(tmp_path / "overconfident.safetensors", net, meta)

    val = read_split_csv(run.run_dir / "splits.csv", "val")
    result = calibrate_checkpoint(overconfident, val, out_dir=tmp_path / "cal")
    assert result.ece_after < result.ece_before
    assert result.temperature > 2
    assert synthdet.load(overconfident).meta.temperature == pytest.approx(result.temperature)
    assert (tmp_path / "cal" / "reliability.png").stat().st_size > 10_000


@pytest.mark.slow
def test_training_stores_temperature_and_a_target_fpr_threshold(toy_sources, tmp_path):
    config = toy_config([{**s, "max_images": 60} for s in toy_sources], tmp_path, epochs=1, target_fpr=0.05)
    config.data.crop = (32, 32)
    config.features.representations = ["srm"]
    run = synthdet.train(config, progress=False)
    meta = synthdet.load(run.best_checkpoint).meta
    assert meta.calibration["target_fpr"] == 0.05 and meta.calibration["val_fpr"] <= 0.05
    assert meta.threshold == meta.calibration["threshold"] and meta.temperature == meta.calibration["temperature"]
