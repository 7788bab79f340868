"""A checkpoint written by an earlier synthdet loads and predicts exactly as it did then.

``tests/data/checkpoint_v1`` was made at commit 1bcc539 (before the network constructor
and the checkpoint module were reorganized): a CIFAKE CNN on rgb + fft_mag features,
trained two epochs on toy data, with its probabilities on four small PNGs.
"""

import json
from pathlib import Path

import pytest

import synthdet

FIXTURE = Path(__file__).parent / "data" / "checkpoint_v1"


@pytest.mark.parametrize("tiles", [True, False])
def test_v1_checkpoint_predicts_as_it_did(tiles):
    expected = json.loads((FIXTURE / "expected.json").read_text())["tiles" if tiles else "center_crop"]
    detector = synthdet.load(FIXTURE / "cifake_cnn_rgb_fft.safetensors", device="cpu")
    results = detector.predict([str(FIXTURE / name) for name in expected], workers=0, tiles=tiles)
    for result, (name, prob) in zip(results, expected.items()):
        assert result.ok, result.error
        assert result.prob_synthetic == pytest.approx(prob, abs=1e-6), name
