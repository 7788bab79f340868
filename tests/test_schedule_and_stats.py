import pytest
import torch

from synthdet.config import FeatureConfig
from synthdet.data.loader import Batch
from synthdet.network import build_network
from synthdet.training.normalization import measure_feature_stats
from synthdet.training.schedule import lr_factor


def test_warmup_rises_linearly_and_ends():
    factors = [lr_factor(s, steps_per_epoch=10, warmup_epochs=1, decay=0.5) for s in range(40)]
    assert factors[0] == pytest.approx(0.1) and factors[4] == pytest.approx(0.5)
    assert factors[9] == pytest.approx(1.0) and factors[10] == pytest.approx(1.0)  # warm-up over after 1 epoch
    assert factors[20] == pytest.approx(0.5) and factors[30] == pytest.approx(0.25)  # then decays per epoch
    assert max(factors) == pytest.approx(1.0)


def test_fractional_and_zero_warmup():
    assert lr_factor(0, 10, 0, 0.9) == 1.0
    assert lr_factor(4, 10, 0.5, 0.9) == pytest.approx(1.0)
    assert lr_factor(15, 10, 0.5, 0.9) == pytest.approx(0.9)


def fake_batches(n=3, value_scale=1.0):
    gen = torch.Generator().manual_seed(0)
    for _ in range(n):
        images = (torch.rand(4, 3, 16, 16, generator=gen) * 255 * value_scale).to(torch.uint8)
        yield Batch(images, torch.zeros(4, dtype=torch.long), torch.arange(4), [""] * 4)


def test_stats_are_measured_on_raw_features_not_normalized_ones():
    net = build_network(FeatureConfig(representations=["rgb", "fft_mag"]), "resnet18")
    mean, std, seen = measure_feature_stats(net, fake_batches(), torch.device("cpu"), max_batches=10)
    feats = torch.cat([net.features(b.images) for b in fake_batches()])
    assert seen == 12
    assert torch.allclose(mean, feats.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(std, feats.std(dim=(0, 2, 3), unbiased=False), atol=1e-4)
    # Once stats are installed, measuring again gives the same numbers: the normalized
    # output is never what gets measured.
    net.normalize.set_stats(mean, std)
    mean2, std2, _ = measure_feature_stats(net, fake_batches(), torch.device("cpu"), max_batches=10)
    assert torch.allclose(mean, mean2) and torch.allclose(std, std2)
    normalized = net.normalize(feats)
    assert torch.allclose(normalized.mean(dim=(0, 2, 3)), torch.zeros(6), atol=1e-4)


def test_stats_use_at_most_max_batches():
    net = build_network(FeatureConfig(representations=["rgb"]), "resnet18")
    _, _, seen = measure_feature_stats(net, fake_batches(5), torch.device("cpu"), max_batches=2)
    assert seen == 8
