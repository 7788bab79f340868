"""Broken or tampered checkpoints: each one loads and predicts sanely, or is one clear CheckpointError.

Seeded random corruptions of a real checkpoint's metadata (NaN, 0, negative, huge, wrong
types, missing fields, truncated JSON) and tensors (missing, wrong shape or dtype, NaN):
never a traceback, never a NaN probability, never a verdict that contradicts the
probability and threshold, and never a reversed ranking of the images.
"""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import synthdet
from synthdet.checkpoint import METADATA_KEY, CheckpointError

FIXTURE = Path(__file__).parent / "data" / "checkpoint_v1"
CHECKPOINT = FIXTURE / "cifake_cnn_rgb_fft.safetensors"
INPUTS = [str(FIXTURE / f"input_{i}.png") for i in range(4)]

#: Metadata fields the fuzzer changes, and values it puts there (or removes the field).
FIELDS = [("temperature",), ("threshold",), ("crop",), ("normalization", "mean", 0), ("normalization", "std", 3),
          ("normalization", "mean"), ("normalization",), ("model", "name"), ("model", "in_chans"),
          ("model", "num_classes"), ("model", "options"), ("features", "representations"),
          ("features", "highpass_radius"), ("features", "grayscale"), ("class_names",), ("format_version",),
          ("training",), ("calibration",)]
class _Missing:
    def __repr__(self) -> str:
        return "<removed>"


MISSING = _Missing()
VALUES = [math.nan, math.inf, -math.inf, 0, -1, 1e308, 10**12, "text", None, [], {}, True, 0.3, 2, "0x0",
          "30000x30000", "48x40", ["synthetic", "real"], ["rgb", "fft_mag", "fft_phase"], ["hologram"],
          {"hidden": 10**9}, [0.5] * 6, MISSING]
#: Changes that must not reorder the images (only the scale or the cut of the probability moves).
ORDER_PRESERVING = {("temperature",), ("threshold",), ("class_names",), ("format_version",), ("training",),
                    ("calibration",)}


def read_original() -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(CHECKPOINT), framework="pt") as fh:
        return json.loads(fh.metadata()[METADATA_KEY]), {k: fh.get_tensor(k) for k in fh.keys()}


def set_field(meta: dict, field: tuple, value) -> dict:
    meta = json.loads(json.dumps(meta))
    *parents, last = field
    node = meta
    for key in parents:
        node = node[key]
    if value is MISSING:
        del node[last]
    else:
        node[last] = value
    return meta


def write(path: Path, meta_text: str | None, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path), metadata=None if meta_text is None else {METADATA_KEY: meta_text})
    return path


def metadata_cases(rng: random.Random, n: int):
    meta, tensors = read_original()
    for _ in range(n):
        field, value = rng.choice(FIELDS), rng.choice(VALUES)
        yield f"{'.'.join(map(str, field))} = {value!r}", field, json.dumps(set_field(meta, field, value)), tensors
    text = json.dumps(meta)
    for cut in sorted(rng.sample(range(1, len(text)), 4)):
        yield f"metadata cut at {cut}", None, text[:cut], tensors
    yield "no synthdet metadata", None, None, tensors


def tensor_cases(rng: random.Random, n: int):
    meta, tensors = read_original()
    text = json.dumps(meta)
    changes = {
        "missing": lambda t, k: {n: v for n, v in t.items() if n != k},
        "extra": lambda t, k: {**t, k + "_extra": t[k].clone()},
        "reshaped": lambda t, k: {**t, k: torch.zeros(t[k].shape[0] + 1, *t[k].shape[1:])},
        "flattened": lambda t, k: {**t, k: t[k].flatten().contiguous()},
        "int32": lambda t, k: {**t, k: t[k].to(torch.int32)},
        "bool": lambda t, k: {**t, k: t[k] > 0},
        "float16": lambda t, k: {**t, k: t[k].half()},
        "float64": lambda t, k: {**t, k: t[k].double()},
        "nan": lambda t, k: {**t, k: t[k].clone().fill_(math.nan)},
        "inf": lambda t, k: {**t, k: t[k].clone().fill_(math.inf)},
    }
    for _ in range(n):
        name, key = rng.choice(sorted(changes)), rng.choice(sorted(tensors))
        yield f"{key} {name}", name, text, changes[name](dict(tensors), key)


def check(path: Path, order_preserving: bool, baseline: list[float]) -> str:
    """Load and predict; returns 'refused' or 'loaded', asserting sanity either way."""
    try:
        detector = synthdet.load(path, device="cpu")
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return "refused"
    results = detector.predict(INPUTS, workers=0)
    for result in results:
        if result.ok:
            assert math.isfinite(result.prob_synthetic) and 0 <= result.prob_synthetic <= 1
            assert result.label == ("real", "synthetic")[int(result.prob_synthetic >= detector.threshold)]
        else:  # an image the model gives no finite score gets an error, never a verdict
            assert result.label is None and result.prob_synthetic is None
    if order_preserving:
        probs = [r.prob_synthetic for r in results]
        for i in range(4):
            for j in range(4):
                if baseline[i] > baseline[j]:
                    assert probs[i] >= probs[j], "the ranking of the images was reversed"
    return "loaded"


def test_random_metadata_corruptions_load_sanely_or_are_refused(tmp_path):
    baseline = [p.prob_synthetic for p in synthdet.load(CHECKPOINT, device="cpu").predict(INPUTS, workers=0)]
    outcomes = {}
    for i, (what, field, text, tensors) in enumerate(metadata_cases(random.Random(15), 70)):
        path = tmp_path / f"case_{i}.safetensors"
        outcomes[what] = check(write(path, text, tensors), field in ORDER_PRESERVING, baseline)
    assert sum(o == "refused" for o in outcomes.values()) >= 40 and "loaded" in outcomes.values()


def test_random_tensor_corruptions_load_sanely_or_are_refused(tmp_path):
    baseline = [p.prob_synthetic for p in synthdet.load(CHECKPOINT, device="cpu").predict(INPUTS, workers=0)]
    outcomes = {}
    for i, (what, change, text, tensors) in enumerate(tensor_cases(random.Random(15), 30)):
        outcomes[what] = check(write(tmp_path / f"case_{i}.safetensors", text, tensors), False, baseline)
        if change in ("missing", "extra", "reshaped", "flattened", "int32", "bool", "nan", "inf"):
            assert outcomes[what] == "refused", what
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(CHECKPOINT.read_bytes()[:-1000])
    assert check(truncated, False, baseline) == "refused"


@pytest.mark.parametrize("field, value, problem", [
    (("temperature",), 0, "temperature: Value error, must be > 0"),
    (("temperature",), -1, "a negative value flips every verdict"),
    (("temperature",), math.nan, "temperature must be a finite number"),
    (("threshold",), math.nan, "threshold must be a finite number"),
    (("threshold",), 2, "threshold: Value error, must be in (0, 1), got 2"),
    (("normalization", "std", 0), 0, "every std must be finite and > 0"),
    (("crop",), "0x0", "crop: Value error, each side must be within 8..4096 pixels"),
    (("crop",), "30000x30000", "each side must be within 8..4096 pixels, got 30000x30000"),
    (("model", "name"), "hologram_net", "unknown model 'hologram_net'"),
    (("features", "representations"), ["hologram"], "unknown representation"),
    (("model", "in_chans"), 3, "model.in_chans is 3, but features ['rgb', 'fft_mag'] give 6 channels"),
    (("class_names",), ["synthetic", "real"], "must be ['real', 'synthetic']"),
    (("model", "options"), {"width": 10**9}, "cannot build the model its metadata describes"),
    # a default in their place would change every score: normalization null gave 0.9953 -> 0.9993
    (("normalization",), None, "normalization missing or null"),
    (("normalization",), MISSING, "normalization missing or null"),
    (("temperature",), MISSING, "temperature missing or null"),
    (("threshold",), None, "threshold missing or null"),
    (("class_names",), MISSING, "class_names missing or null"),
])
def test_each_problem_the_issue_found_is_one_clear_error(tmp_path, field, value, problem):
    meta, tensors = read_original()
    path = write(tmp_path / "bad.safetensors", json.dumps(set_field(meta, field, value)), tensors)
    with pytest.raises(CheckpointError) as info:
        synthdet.load(path, device="cpu")
    assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)


def test_a_checkpoint_without_normalization_is_refused_with_exit_2(tmp_path, cli):
    meta, tensors = read_original()
    path = write(tmp_path / "no_norm.safetensors", json.dumps(set_field(meta, ("normalization",), None)), tensors)
    for command in (("info", path), ("predict", "-m", path, *INPUTS)):
        code, _, err = cli(*command)
        assert code == 2 and "normalization missing or null" in err and "Traceback" not in err


@pytest.mark.slow
def test_onnx_metadata_is_validated_too(tmp_path):
    import onnx

    from synthdet.inference.onnx_export import export_onnx

    exported, _ = export_onnx(CHECKPOINT, tmp_path / "model.onnx")
    model = onnx.load(str(exported))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    good = entry.value
    bad = {"must be > 0": json.dumps(set_field(json.loads(good), ("temperature",), 0)),
           "not valid JSON": good[:40],
           "does not match its metadata": json.dumps(set_field(json.loads(good), ("crop",), "48x48"))}
    for problem, text in bad.items():
        entry.value = text
        onnx.save(model, str(tmp_path / "bad.onnx"))
        with pytest.raises(CheckpointError, match=problem):
            synthdet.load(tmp_path / "bad.onnx")
    probs = [p.prob_synthetic for p in synthdet.load(exported).predict(INPUTS, workers=0)]
    expected = [p.prob_synthetic for p in synthdet.load(CHECKPOINT, device="cpu").predict(INPUTS, workers=0)]
    assert np.allclose(probs, expected, atol=1e-4)
