import math

import numpy as np
import pytest
import scipy.fft
import torch

from synthdet.features import FeatureExtractor
from synthdet.features.spectral import DCT_LOG_EPS, dct2, dct_log, fft_magnitude, fft_phase, highpass


def constant(value=0.5, h=16, w=20):
    return torch.full((1, 1, h, w), value)


def test_fft_magnitude_of_a_constant_image_is_only_dc_at_the_centre():
    mag = fft_magnitude(constant(0.5))[0, 0]
    h, w = mag.shape
    expected_dc = math.log1p(0.5 * h * w)
    assert mag[h // 2, w // 2].item() == pytest.approx(expected_dc, rel=1e-5)
    mag[h // 2, w // 2] = 0
    assert mag.abs().max().item() < 1e-5


def test_fft_phase_of_a_shifted_impulse():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 0, 1] = 1.0  # impulse at column 1: phase = -2*pi*k/8 along columns
    phase = fft_phase(x)[0, 0]
    assert phase[4, 4 + 1].item() == pytest.approx(-2 * math.pi / 8, abs=1e-5)  # k = 1 after fftshift


def test_dct_matches_scipy_orthonormal_dct():
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 12, 10)).astype(np.float32)
    ours = dct2(torch.from_numpy(x)).numpy()
    ref = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    assert np.allclose(ours, ref, atol=1e-5)


def test_dct_log_of_a_constant_is_dc_only():
    out = dct_log(constant(0.25, 8, 8))[0, 0]
    assert out[0, 0].item() == pytest.approx(math.log(0.25 * 8 + DCT_LOG_EPS), rel=1e-5)
    assert torch.allclose(out[1:, :], torch.full_like(out[1:, :], math.log(DCT_LOG_EPS)), atol=1e-3)


def test_highpass_removes_the_mean_and_keeps_fine_detail():
    x = torch.rand(1, 1, 32, 32) + 3.0
    out = highpass(x, highpass_radius=2)
    assert abs(out.mean().item()) < 1e-5
    checker = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(16, 16)[None, None]
    assert torch.allclose(highpass(checker, 2), checker, atol=1e-5)  # Nyquist pattern passes untouched


def test_highpass_radius_zeroes_low_frequency_bins_of_the_spectrum():
    x = torch.rand(1, 1, 32, 32)
    mag = fft_magnitude(x, highpass_radius=3)[0, 0]
    assert mag[16, 16] == 0 and mag[16, 18] == 0 and mag[16, 20] > 0


def test_multi_representation_channels_and_dtype():
    images = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    fx = FeatureExtractor(["fft_mag", "fft_phase", "dct"])
    out = fx(images)
    assert fx.out_channels == 9 and out.shape == (2, 9, 32, 48) and out.dtype == torch.float32
    gray = FeatureExtractor(["fft_mag", "fft_phase", "dct"], grayscale=True)
    assert gray.out_channels == 3 and gray(images).shape == (2, 3, 32, 48)


def test_uint8_and_float_inputs_give_the_same_features():
    images = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    fx = FeatureExtractor(["rgb", "fft_mag"])
    assert torch.allclose(fx(images), fx(images.float() / 255))


def test_highpass_representation_requires_a_radius():
    with pytest.raises(ValueError, match="highpass_radius"):
        FeatureExtractor(["highpass"])
