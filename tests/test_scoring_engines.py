"""synthdet score: the local pipeline and Ray Data write the same rows, one per input, errors included."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import AWKWARD_FILES
from synthdet.config import SourceConfig, SplitFractions
from synthdet.data.sharding import write_shards
from synthdet.data.sources import collect_records
from synthdet.inference import batch
from synthdet.inference.detector import PredictOptions
from synthdet.weights import sha256_of

pytestmark = pytest.mark.slow


def synthdet(*args):
    proc = subprocess.run([sys.executable, "-m", "synthdet", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def ray_local():
    """A Ray of 2 CPUs and a 200 MB object store in this process, shut down after the module."""
    try:
        import ray
    except ImportError as exc:
        if os.environ.get("SYNTHDET_REQUIRE_RAY"):
            pytest.fail(f"ray is required here (SYNTHDET_REQUIRE_RAY) but cannot be imported: {exc}")
        pytest.skip(f"ray is not installed ({exc}); pip install 'synthdet[ray]'")
    ray.init(num_cpus=2, object_store_memory=200_000_000, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(awkward_folder, toy_sources, tmp_path_factory):
    """A folder of 8 toy images plus every awkward file, and shards of 12 labelled toy images."""
    folder = tmp_path_factory.mktemp("score")
    for source in toy_sources:
        for image in sorted(os.listdir(source["path"]))[:2]:
            shutil.copy(os.path.join(source["path"], image), folder / f"{source['name']}-{image}")
    for name in AWKWARD_FILES:
        shutil.copy(awkward_folder / name, folder / name)
    records = collect_records([SourceConfig(**{**s, "max_images": 3}) for s in toy_sources], SplitFractions())
    shards = tmp_path_factory.mktemp("score-shards")
    write_shards(records, shards, per_shard=5)
    return folder, shards


def by_input(table):
    return {row["input"]: row for row in table.to_pylist()}


def test_ray_scores_one_row_per_input_as_predict_does(checkpoint, inputs, ray_local, tmp_path):
    folder, shards = inputs
    listed = batch.list_inputs([str(folder), f"{shards}/shard-{{000000..000002}}.tar", str(tmp_path / "missing")])
    batch.score_ray(str(checkpoint), listed, str(tmp_path / "ray.parquet"), PredictOptions(batch_size=4), actors=2)
    rows = by_input(batch.read_results(str(tmp_path / "ray.parquet")))
    assert len(rows) == len(listed) == 8 + len(AWKWARD_FILES) + 12 + 1

    # an unreadable image is a row with its reason, never a failed job
    for name, reason in AWKWARD_FILES.items():
        row = rows[str(folder / name)]
        assert (row["error"] is None) if reason is None else (reason in row["error"] and row["prob_synthetic"] is None)
    assert rows[str(tmp_path / "missing")]["error"] == "no such file or folder"

    # the same probabilities as `synthdet predict`, and the labels shards and folders know
    proc = synthdet("predict", "-m", checkpoint, folder, "--json")
    predicted = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(predicted) == 8 + len(AWKWARD_FILES)
    for p in predicted:
        row = rows[os.path.abspath(p["input"])]
        assert row["predicted"] == p.get("label") and row["uncertain"] == p.get("uncertain")
        assert row["verdict"] == p.get("verdict") and row["basis"] == p.get("basis")  # provenance beside pixels
        if "prob_synthetic" in p:
            assert row["prob_synthetic"] == pytest.approx(p["prob_synthetic"], abs=1e-6)
    sharded = [r for r in rows.values() if "#" in r["input"]]
    assert len(sharded) == 12 and all(r["label"] in ("real", "synthetic") and r["error"] is None for r in sharded)
    assert all(r["basis"] == "pixels" and r["provenance"] is None for r in sharded)  # members of shards: pixels only
    assert {r["model_sha256"] for r in rows.values()} == {sha256_of(checkpoint)}

    # --engine local writes the same rows
    synthdet("score", folder, f"{shards}/shard-{{000000..000002}}.tar", tmp_path / "missing", "--model", checkpoint,
             "--out", tmp_path / "local.parquet", "--batch-size", 4)
    local = by_input(batch.read_results(str(tmp_path / "local.parquet")))
    assert local.keys() == rows.keys()
    for name, row in local.items():
        other = rows[name]
        assert {k: v for k, v in row.items() if k != "prob_synthetic"} == {
            k: v for k, v in other.items() if k != "prob_synthetic"}
        assert (row["prob_synthetic"] is None) == (other["prob_synthetic"] is None)
        if row["prob_synthetic"] is not None:
            assert row["prob_synthetic"] == pytest.approx(other["prob_synthetic"], abs=1e-6)


def test_score_command_joins_a_running_ray_and_never_overwrites(checkpoint, inputs, ray_local, tmp_path):
    folder, _ = inputs
    address = ray_local.get_runtime_context().gcs_address
    proc = synthdet("score", folder, "--engine", "ray", "--address", address, "--actors", 1, "--model", checkpoint,
                    "--out", tmp_path / "out")
    n = 8 + len(AWKWARD_FILES)
    failed = sum(1 for reason in AWKWARD_FILES.values() if reason)
    assert f"{n} input(s)" in proc.stdout and f"{n - failed} scored, {failed} failed" in proc.stdout
    assert batch.read_results(str(tmp_path / "out")).num_rows == n
    again = subprocess.run([sys.executable, "-m", "synthdet", "score", folder, "--model", checkpoint, "--out",
                            tmp_path / "out"], capture_output=True, text=True)
    assert again.returncode == 2 and "already exists" in again.stderr
