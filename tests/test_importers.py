"""The peer project's released CIFAKE weights import and give the peer's own outputs."""

import pytest
import torch
import torch.nn.functional as F

import synthdet
from conftest import SHARED_DATA
from synthdet.importers import import_aics_cifake

PEER = SHARED_DATA.parent / "peer-models" / "aics-project"
pytestmark = pytest.mark.skipif(not PEER.is_dir(), reason="../shared/peer-models is not present")


def peer_probability_real(state, images_uint8, attention):
    """The peer's forward pass written out from its SOURCE.txt, straight from the state dict."""
    x = (images_uint8.float() / 255 - 0.5) / 0.5
    x = F.max_pool2d(F.relu(F.conv2d(x, state["conv1.weight"], state["conv1.bias"])), 2)
    if attention:
        flat = x.flatten(2)
        style = torch.stack([flat.mean(2), flat.std(2, unbiased=False)], dim=2)
        z = F.conv1d(style, state["attend.cfc.weight"], groups=6)
        z = F.batch_norm(z, state["attend.bn.running_mean"], state["attend.bn.running_var"],
                         state["attend.bn.weight"], state["attend.bn.bias"], training=False)
        x = x * torch.sigmoid(z).unsqueeze(-1)
    x = F.max_pool2d(F.relu(F.conv2d(x, state["conv2.weight"], state["conv2.bias"])), 2).flatten(1)
    x = F.relu(F.linear(x, state["fc1.weight"], state["fc1.bias"]))
    x = F.relu(F.linear(x, state["fc2.weight"], state["fc2.bias"]))
    return torch.sigmoid(F.linear(x, state["fc3.weight"], state["fc3.bias"]))[:, 0]


@pytest.mark.parametrize("file, attention", [("base_model.pth", False), ("SRM_model.pth", True)])
def test_imported_peer_gives_the_peers_probabilities(tmp_path, file, attention):
    ckpt = import_aics_cifake(PEER / file, tmp_path / "peer.safetensors", attention)
    detector = synthdet.load(ckpt)
    assert detector.meta.crop == (32, 32) and detector.meta.model.name.startswith("cifake_cnn")

    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    state = torch.load(PEER / file, map_location="cpu", weights_only=True)
    expected_synthetic = 1 - peer_probability_real(state, images, attention)
    with torch.inference_mode():
        ours = torch.softmax(detector.net(images), dim=1)[:, 1]
    assert torch.allclose(ours, expected_synthetic, atol=1e-5)
