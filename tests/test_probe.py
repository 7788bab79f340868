"""Probes on frozen backbones: the head fit, the embedding cache, and the checkpoint that names its backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import synthdet
from conftest import toy_config
from synthdet.checkpoint import CheckpointError, read_metadata, read_pretrained, rewrite_metadata
from synthdet.config import FeatureConfig, config_from_dict
from synthdet.data import loader
from synthdet.data.transforms import EvalTransform
from synthdet.inference.embeddings import PREPROCESSING_VERSION, EmbeddingCache, content_key, embed_items
from synthdet.models import create_model
from synthdet.models.probe import ProbeHead
from synthdet.network import build_network
from synthdet.pipeline import train
from synthdet.training.probe import C_GRID, Embedded, _fit_linear, sample_weights
from synthdet.weights import tensors_sha256

BACKBONE = {"backbone": "efficientnet_lite", "backbone_options": {"variant": 0}}


@pytest.fixture(scope="module")
def random_backbone(tmp_path_factory):
    """Untrained EfficientNet-Lite0 weights as a local file: the probe machinery does not care."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "lite0-random.safetensors"
    save_file(create_model("efficientnet_lite", num_classes=2).state_dict(), str(path))
    return path


def _probe_net(random_backbone, **options):
    return build_network(FeatureConfig(representations=["rgb"]), "probe", {**BACKBONE, **options},
                         pretrained=str(random_backbone))


def test_linear_head_separates_separable_vectors():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 64)) * 2
    def cloud(label, n):
        return [torch.from_numpy(centres[label] + rng.normal(size=(1, 64))).float() for _ in range(n)]
    train_set = Embedded(cloud(0, 80) + cloud(1, 40), [0] * 80 + [1] * 40, ["a"] * 80 + ["b"] * 40)
    val_set = Embedded(cloud(0, 30) + cloud(1, 30), [0] * 30 + [1] * 30, ["a"] * 30 + ["b"] * 30)
    head = ProbeHead(64, 2)
    config = config_from_dict({"train": {"select_metric": "auc"}})
    history, best = _fit_linear(head, train_set, val_set, config)
    assert len(history) == len(C_GRID) and best["val"]["accuracy"] >= 0.97 and best["val"]["roc_auc"] >= 0.99


def test_sample_weights_give_each_class_half_and_sources_equal_shares():
    labels = [0, 0, 0, 0, 1, 1]
    sources = ["big", "big", "big", "small", "gan", "gan"]
    w = sample_weights(labels, sources)
    assert w[:4].sum() == pytest.approx(w[4:].sum())  # classes weigh the same
    assert w[:3].sum() == pytest.approx(w[3])  # a source's share does not grow with its size
    assert w.mean() == pytest.approx(1.0)


def test_cache_namespace_changes_with_backbone_view_precision_and_version(tmp_path):
    base = {"weights": "clip_vit_b16", "sha256": "aa", "backbone": "clip_vit", "precision": "fp32"}
    same = EmbeddingCache(dict(base), tmp_path)
    assert EmbeddingCache(dict(base), tmp_path).path == same.path
    for change in ({"sha256": "bb"}, {"precision": "bf16"}, {"backbone_options": {"variant": "l14"}}):
        assert EmbeddingCache({**base, **change}, tmp_path).path != same.path
    assert json.loads(same.path.with_suffix(".json").read_text())["preprocessing"] == PREPROCESSING_VERSION


def test_content_key_follows_the_bytes_and_the_view(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    key = content_key(str(image), "crop224x224")
    assert key == content_key(str(image), "crop224x224") != content_key(str(image), "resize224x224")
    Image.fromarray(np.ones((40, 40, 3), np.uint8)).save(image)
    assert content_key(str(image), "crop224x224") != key
    assert content_key(str(tmp_path / "missing.png"), "crop224x224") is None


def test_cached_embeddings_skip_decoding_and_keep_input_order(random_backbone, tmp_path, monkeypatch):
    net = _probe_net(random_backbone, low_level=["residual"]).eval()
    rng = np.random.default_rng(1)
    files = []
    for i in range(7):
        files.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (48 + i, 40, 3), dtype=np.uint8)).save(files[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    cache = EmbeddingCache({"test": "order"}, tmp_path / "cache")

    def run(items):
        out = {}
        for batch, parts in embed_items(net, items, EvalTransform((32, 32)), cache, torch.device("cpu"),
                                        batch_size=2, workers=0):
            out.update({i: r for i, r in batch.failures})
            out.update({i: parts["final"][k] for k, i in enumerate(batch.indices.tolist())})
            yield batch.indices.tolist() + [i for i, _ in batch.failures]
        run.result = out

    first = [i for chunk in run(files[::2]) for i in chunk]  # warm the cache with every other file
    assert sorted(first) == [0, 1, 2, 3]
    decoded = []
    original = loader.load_image
    monkeypatch.setattr(loader, "load_image", lambda path, *a, **k: decoded.append(path) or original(path, *a, **k))
    items = files[:5] + [str(broken)] + files[5:]
    order = [i for chunk in run(items) for i in chunk]
    assert sorted(order) == list(range(len(items)))
    assert sorted(decoded) == sorted([files[1], files[3], str(broken), files[5]])  # only the misses
    assert "not an image" in run.result[5]
    with torch.inference_mode():
        direct = net.backbone.embed_parts(net.inputs(torch.from_numpy(
            EvalTransform((32, 32))(np.array(Image.open(files[2]).convert("RGB"))).copy()).permute(2, 0, 1)[None]))
    assert torch.allclose(run.result[2], direct["final"][0], atol=1e-5)  # a cache hit gives the same vector


@pytest.mark.slow
def test_probe_trains_from_cache_and_its_checkpoint_names_the_backbone(toy_sources, random_backbone, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setenv("SYNTHDET_HOME", str(tmp_path / "home"))
    sources = [{**s, "max_images": 60} for s in toy_sources]
    config = toy_config(sources, tmp_path, select_metric="auc")
    config.features.representations = ["rgb"]
    config.model.name, config.model.pretrained = "probe", str(random_backbone)
    config.model.options = {**BACKBONE, "embedding": ["final"], "low_level": ["residual"]}
    config.data.crop = (64, 64)
    result = train(config, progress=False)
    assert result.best_val["accuracy"] >= 0.9 and result.test.metrics["accuracy"] >= 0.85

    meta = read_metadata(result.best_checkpoint)
    assert meta.model.pretrained.weights == str(random_backbone)
    assert meta.model.pretrained.tensors_sha256 == tensors_sha256(read_pretrained(random_backbone))
    with safe_open(str(result.best_checkpoint), framework="pt") as fh:
        assert not [k for k in fh.keys() if k.startswith("backbone.encoder.")]  # the head only
    detector = synthdet.load(result.best_checkpoint, device="cpu")
    assert len(detector.cache) > 0  # train, val and test views are cached
    again = train(config, progress=False)  # the second run embeds nothing new
    assert again.best_val["roc_auc"] == pytest.approx(result.best_val["roc_auc"])

    rewrite_metadata(result.best_checkpoint, meta.model_copy(
        update={"model": meta.model.model_copy(update={"pretrained": meta.model.pretrained.model_copy(
            update={"tensors_sha256": "0" * 64})})}))
    with pytest.raises(CheckpointError, match="give it the weights file it was trained on"):
        synthdet.load(result.best_checkpoint, device="cpu")
