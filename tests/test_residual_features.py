import numpy as np
import pytest
import torch

from synthdet.features import FeatureExtractor
from synthdet.features.residual import FORENSIC_SRM, SRM_TRUNCATION, npr_residual, sobel_gradient, srm_kernels, srm_residual


def test_thirty_srm_kernels_all_high_pass_and_distinct():
    kernels = srm_kernels()
    assert kernels.shape == (30, 5, 5)
    assert torch.allclose(kernels.sum(dim=(1, 2)), torch.zeros(30), atol=1e-6)
    flat = kernels.flatten(1)
    assert len({tuple(k.tolist()) for k in flat}) == 30


def test_forensic_srm_kernels_are_the_documented_three():
    k = srm_kernels()[list(FORENSIC_SRM)]
    assert torch.allclose(k[0] * 12, torch.tensor([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2],
                                                   [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]], dtype=torch.float))
    assert torch.allclose(k[1][1:4, 1:4] * 4, torch.tensor([[-1, 2, -1], [2, -4, 2], [-1, 2, -1]], dtype=torch.float))
    assert torch.allclose(k[2][2] * 2, torch.tensor([0, 1, -2, 1, 0], dtype=torch.float))


@pytest.mark.parametrize("fn", [srm_residual, sobel_gradient, npr_residual])
def test_constant_image_has_zero_residual(fn):
    out = fn(torch.full((2, 3, 16, 20), 0.37))
    assert out.abs().max().item() < 1e-4


def test_srm_shape_and_truncation_on_a_step_edge():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 8:] = 1.0  # a strong vertical edge: residuals far beyond the truncation
    out = srm_residual(x)
    assert out.shape == (1, 3, 16, 16)
    assert out.abs().max().item() == pytest.approx(1.0)  # clamped to +-T, scaled to +-1
    small = srm_residual(x * (1 / 255))  # a one-grey-level step stays below the clamp
    assert 0 < small.abs().max().item() < 1.0
    assert SRM_TRUNCATION == 3.0


def test_sobel_gradient_of_a_ramp():
    ramp = torch.arange(10, dtype=torch.float).repeat(10, 1)[None, None] / 10
    grad = sobel_gradient(ramp)
    assert grad[0, 0, 5, 5].item() == pytest.approx(0.8, rel=1e-4)  # (1+2+1) x (x[i+1] - x[i-1] = 0.2)


def test_npr_is_zero_for_nearest_upsampled_images_only():
    rng = np.random.default_rng(0)
    small = torch.from_numpy(rng.random((1, 3, 8, 8)).astype(np.float32))
    upsampled = small.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
    assert npr_residual(upsampled).abs().max().item() == 0.0
    assert npr_residual(torch.rand(1, 3, 16, 16)).abs().mean().item() > 0.1
    assert npr_residual(torch.rand(1, 3, 15, 17)).shape == (1, 3, 15, 17)  # odd sizes keep their shape


def test_residual_channel_counts_in_the_extractor():
    images = torch.randint(0, 256, (2, 3, 24, 24), dtype=torch.uint8)
    fx = FeatureExtractor(["srm", "grad", "npr"])
    assert fx.out_channels == 9 + 3 + 3 and fx(images).shape == (2, 15, 24, 24)
    assert FeatureExtractor(["srm"], grayscale=True).out_channels == 3
