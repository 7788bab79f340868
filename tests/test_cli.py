import csv
import io
import json
import subprocess
import sys

import pytest

from conftest import AWKWARD_FILES

pytestmark = pytest.mark.slow


def synthdet(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "synthdet", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def test_predict_json_and_csv_report_every_file(checkpoint, awkward_folder, toy_sources):
    folder = toy_sources[0]["path"]
    proc = synthdet("predict", "-m", checkpoint, awkward_folder, f"{folder}/*_000[0-4].jpg", "missing.png", "--json")
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    by_name = {r["input"].rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == len(AWKWARD_FILES) + 5 + 1
    assert by_name["missing.png"]["error"] == "no such file or folder"
    assert by_name["empty.jpg"]["error"] == "empty file (0 bytes)"
    toy = [r for r in rows if "_000" in r["input"]]
    assert all(r["label"] == "synthetic" for r in toy)  # render-shapes is synthetic
    assert "4 failed" in proc.stderr

    proc = synthdet("predict", "-m", checkpoint, awkward_folder, "--csv")
    table = list(csv.DictReader(io.StringIO(proc.stdout)))
    assert [r["input"].rsplit("/", 1)[-1] for r in table] == sorted(AWKWARD_FILES)


def test_predict_exits_nonzero_when_nothing_could_be_scored(checkpoint, tmp_path):
    proc = synthdet("predict", "-m", checkpoint, tmp_path / "nothing-here.jpg", check=False)
    assert proc.returncode == 1 and "0 input(s) scored, 1 failed" in proc.stderr


def test_evaluate_writes_metrics_files_and_prints_the_table(checkpoint, trained_run, tmp_path):
    out = tmp_path / "eval"
    proc = synthdet("evaluate", "-m", checkpoint, "--data", trained_run.run_dir / "config.yaml", "--out", out,
                    "--workers", "0")
    assert "mean accuracy over sources" in proc.stdout
    for source in ("camera-shapes", "render-terrain"):
        assert source in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["accuracy"] >= 0.9
    assert len(metrics["per_source"]) == 4
    assert "| source | n |" in (out / "metrics.md").read_text()
    assert (out / "predictions.csv").read_text().count("\n") == metrics["overall"]["n"] + 1


def test_evaluate_resize_scores_downscaled_whole_images_and_says_so(checkpoint, toy_sources, tmp_path):
    real = next(s for s in toy_sources if s["label"] == "real")
    out = tmp_path / "resized"
    synthdet("evaluate", "-m", checkpoint, "--data", real["path"], "--label", "real", "--resize", "--out", out,
             "--workers", "0")
    metrics = json.loads((out / "metrics.json").read_text())
    view = "image resized (shorter side) and center-cropped to 64x64"
    assert metrics["view"] == view and metrics["overall"]["n"] == 200
    assert f"scored on: {view}" in (out / "report.md").read_text()
    proc = synthdet("evaluate", "-m", checkpoint, "--data", real["path"], "--label", "real", "--resize", "--tiles",
                    check=False)
    assert proc.returncode == 2 and "give --tiles or --resize, not both" in proc.stderr


def test_benchmark_reports_accuracy_on_a_folder_of_known_label(checkpoint, toy_sources):
    real = next(s for s in toy_sources if s["label"] == "real")
    proc = synthdet("benchmark", "-m", checkpoint, real["path"], "--label", "real", "--workers", "0")
    accuracy = float(proc.stdout.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.9 and "on 200 real images" in proc.stdout


def test_config_errors_are_one_clear_line_with_exit_code_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    proc = synthdet("train", bad, check=False)
    assert proc.returncode == 2
    assert "train.epoch: unknown key (did you mean 'epochs'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_info_prints_the_checkpoint_metadata(checkpoint):
    meta = json.loads(synthdet("info", checkpoint, "--json").stdout)
    assert meta["model"]["name"] == "resnet18" and meta["crop"] == "64x64"


def test_toy_data_writes_a_trainable_config(tmp_path):
    synthdet("toy-data", tmp_path / "toy", "--images-per-source", "3")
    from synthdet.config import load_config

    config = load_config(tmp_path / "toy" / "toy.yaml")
    assert [s.display_name for s in config.data.sources] == [
        "render-shapes", "render-terrain", "camera-shapes", "camera-terrain"]
    assert all(s.path.is_dir() for s in config.data.sources)


def test_error_messages_keep_brackets_in_names(tmp_path):
    """A message is text, not rich markup: '[b]' or '[/x]' in a path must print as written, not vanish or crash."""
    for name in ("model[b].safetensors", "model[/x].safetensors"):
        proc = synthdet("info", tmp_path / name, check=False)
        assert proc.returncode == 2 and name in proc.stderr and "Traceback" not in proc.stderr
