import pytest
import torch
from safetensors.torch import save_file

from synthdet.checkpoint import read_pretrained
from synthdet.models import create_model, list_models
from synthdet.models.registry import adapt_input_conv

# Parameter counts torchvision documents for its ImageNet models (3 channels, 1000 classes):
# equal counts plus equal key names mean its published weights load into ours.
TORCHVISION_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_resnet_matches_torchvision_parameter_count(name):
    model = create_model(name, in_chans=3, num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_resnet18_state_dict_uses_torchvision_key_names():
    keys = set(create_model("resnet18", num_classes=1000).state_dict())
    for key in ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer2.0.downsample.1.num_batches_tracked", "layer4.1.bn2.bias", "fc.weight", "fc.bias"]:
        assert key in keys
    assert len(keys) == 122  # torchvision's resnet18 state dict has 122 entries


@pytest.mark.parametrize("in_chans", [1, 3, 9])
def test_any_number_of_input_channels(in_chans):
    model = create_model("resnet18", in_chans=in_chans, num_classes=2).eval()
    assert model(torch.randn(2, in_chans, 64, 64)).shape == (2, 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_load_from_a_local_file_with_adapted_first_conv(tmp_path, suffix):
    imagenet = create_model("resnet18", in_chans=3, num_classes=1000)
    state = imagenet.state_dict()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)

    model = create_model("resnet18", in_chans=9, num_classes=2, pretrained=read_pretrained(path))
    own = model.state_dict()
    assert torch.equal(own["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    expected_conv = state["conv1.weight"].repeat(1, 3, 1, 1) * (3 / 9)
    assert torch.allclose(own["conv1.weight"], expected_conv)
    assert own["fc.weight"].shape == (2, 512)  # classifier re-initialised for 2 classes


def test_adapted_conv_keeps_the_response_to_a_flat_input():
    weight = torch.randn(8, 3, 3, 3)
    for in_chans in (1, 6, 9):
        adapted = adapt_input_conv(weight, in_chans)
        assert adapted.sum().item() == pytest.approx(weight.sum().item(), rel=1e-4)


def test_missing_pretrained_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        read_pretrained(tmp_path / "nope.pth")


def test_unknown_model_lists_the_registry():
    with pytest.raises(KeyError, match="resnet18"):
        create_model("vgg11")
    assert {"resnet18", "resnet34", "resnet50"} <= set(list_models())


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (32, 0.46), (56, 0.85)])
def test_cifar_resnet_depths_have_the_sizes_of_he_et_al(depth, millions):
    model = create_model("resnet_cifar", num_classes=10, depth=depth)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(millions, abs=0.01)


def test_cifar_resnet_keeps_every_pixel_of_a_32x32_image_in_its_first_stage():
    model = create_model("resnet_cifar", depth=20).eval()
    shapes = {}
    for name in ("conv1", "layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(lambda m, i, out, name=name: shapes.update({name: out.shape[1:]}))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    assert shapes == {"conv1": (16, 32, 32), "layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8)}
    assert "layer2.0.downsample.0.weight" in model.state_dict()  # the block and key names of resnet18


def test_cifar_resnet_depth_must_be_6n_plus_2():
    with pytest.raises(ValueError, match="6n \\+ 2"):
        create_model("resnet_cifar", depth=18)
