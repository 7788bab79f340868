import numpy as np
import pytest
import torch

from synthdet.config import AugmentConfig, ConfigError, config_from_dict
from synthdet.data.augment import gaussian_blur, gaussian_noise, jpeg_compress, rescale
from synthdet.data.transforms import TrainTransform
from synthdet.inference.views import ResizeTransform


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)


def test_jpeg_quality_controls_the_error(image):
    err = {q: np.abs(jpeg_compress(image, q).astype(int) - image).mean() for q in (30, 95)}
    assert err[30] > err[95] > 0


def test_blur_removes_high_frequency_energy(image):
    blurred = gaussian_blur(image, 2.0)
    assert blurred.shape == image.shape and blurred.dtype == np.uint8
    assert np.diff(blurred.astype(float), axis=1).std() < 0.3 * np.diff(image.astype(float), axis=1).std()
    assert gaussian_blur(image, 0) is image


def test_noise_has_the_requested_sigma():
    flat = np.full((200, 200, 3), 128, np.uint8)
    noisy = gaussian_noise(flat, 0.02, seed=1)
    assert (noisy.astype(float) - 128).std() == pytest.approx(0.02 * 255, rel=0.05)
    assert np.array_equal(noisy, gaussian_noise(flat, 0.02, seed=1))


def test_rescale(image):
    assert rescale(image, 0.5).shape == (32, 40, 3)


def test_train_transform_always_returns_the_crop_size(image):
    augment = AugmentConfig(hflip=0.5, vflip=0.5, jpeg={"p": 1.0}, blur={"p": 1.0}, noise={"p": 1.0},
                            resize={"p": 1.0, "scale": [0.3, 2.0]})
    transform = TrainTransform((48, 40), augment)
    torch.manual_seed(0)
    for _ in range(20):
        out = transform(image)
        assert out.shape == (48, 40, 3) and out.dtype == np.uint8


def test_augmentation_is_reproducible_under_the_torch_seed(image):
    transform = TrainTransform((32, 32), AugmentConfig(jpeg={"p": 0.5}, noise={"p": 0.5}, resize={"p": 0.5}))
    torch.manual_seed(3)
    first = [transform(image) for _ in range(5)]
    torch.manual_seed(3)
    second = [transform(image) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_default_augmentation_is_crop_and_flip_only(image):
    transform = TrainTransform((64, 80), AugmentConfig(hflip=0.0))
    assert np.array_equal(transform(image), image)  # full-size crop, no flip, nothing else


@pytest.mark.parametrize("bad, message", [
    ({"jpeg": {"p": 0.5, "quality": [90, 60]}}, "quality must be \\[low, high\\]"),
    ({"jpeg": {"quality": [0, 60]}}, "within 1..100"),
    ({"resize": {"scale": [0, 1]}}, "must be > 0"),
    ({"blur": {"p": 1.5}}, "augment.blur.p"),
])
def test_bad_augmentation_settings_are_refused(bad, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"augment": bad})


def test_resize_transform_shrinks_the_shorter_side_to_the_crop_and_keeps_the_centre():
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, 320:] = 255
    small = ResizeTransform((32, 32))(image)  # 480x640 -> 32x43, then the middle 32 columns
    assert small.shape == (32, 32, 3)
    assert small[:, :14].max() < 10 and small[:, 18:].min() > 245  # both halves, aspect kept


def test_augmented_copies_crop_anywhere_but_repeat_for_one_image():
    """region=anywhere: copies of different images come from different places; one image's copy is fixed."""
    from synthdet.inference.views import AugmentedView
    from synthdet.data.transforms import EvalTransform

    rng = np.random.default_rng(1)
    # each pixel says where it is: its row and column, so a crop tells its position
    rows, cols = np.meshgrid(np.arange(600), np.arange(800), indexing="ij")
    config = AugmentConfig(hflip=0.0, region="anywhere")
    corners = set()
    for k in range(6):
        image = np.stack([rows % 256, cols % 256, rng.integers(0, 256, (600, 800))], -1).astype(np.uint8)
        image[..., 2] = k  # a different image each time (the copy's randomness is seeded by its pixels)
        view = AugmentedView(EvalTransform((64, 64)), config, 0)
        crop = view(image)
        again = view(image)
        assert np.array_equal(crop, again)
        corners.add((int(crop[0, 0, 0]), int(crop[0, 0, 1])))
    assert len(corners) >= 4  # anywhere, not always the center
    centered = AugmentedView(EvalTransform((64, 64)), AugmentConfig(hflip=0.0), 0)(image)
    assert (int(centered[0, 0, 0]), int(centered[0, 0, 1])) == ((300 - 32) % 256, (400 - 32) % 256)


def test_clean_false_trains_on_the_degraded_copies_only_and_keeps_their_cache_keys():
    """Turning the clean view off must not re-embed the copies: their cache key ignores ``clean``."""
    from synthdet.data.transforms import EvalTransform
    from synthdet.training.probe import training_views

    view = EvalTransform((64, 64))
    with_clean = training_views(view, AugmentConfig(copies=2, jpeg={"p": 1.0}))
    copies_only = training_views(view, AugmentConfig(copies=2, clean=False, jpeg={"p": 1.0}))
    assert with_clean[0] is view and len(with_clean) == 3
    assert [t.cache_key for t in copies_only] == [t.cache_key for t in with_clean[1:]]
    with pytest.raises(ConfigError, match="augment.copies must be >= 1"):
        config_from_dict({"augment": {"clean": False}})
