import csv
import json

import pytest
import torch
from safetensors import safe_open

import synthdet
from conftest import AWKWARD_FILES, TRAINED_RUN_EPOCHS, toy_config
from synthdet.config import ConfigError
from synthdet.data import decode
from synthdet.data.sources import read_split_csv, records_from_arguments
from synthdet.evaluation.evaluate import evaluate_records
from synthdet.pipeline import train
from synthdet.rundir import RunDir
from synthdet.training.trainer import TrainingError

pytestmark = pytest.mark.slow


def small(sources, n=40):
    return [{**s, "max_images": n} for s in sources]


def test_training_on_toy_data_reaches_high_validation_accuracy(trained_run):
    assert trained_run.best_val["accuracy"] >= 0.95
    run = trained_run.run_dir
    for name in ["config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors", "splits.csv",
                 "skipped.csv", "train.log", "summary.json"]:
        assert (run / name).is_file(), name
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, TRAINED_RUN_EPOCHS + 1))
    best = max(history, key=lambda h: (h["val_accuracy"], -h["val_loss"]))
    assert trained_run.best_epoch == best["epoch"]  # chosen on validation
    summary = json.loads((run / "summary.json").read_text())
    assert summary["split_rules"] == {s: "hashed by file: train/val/test 70%/15%/15%" for s in summary["data"]}


def test_reloaded_checkpoint_reproduces_validation_scores_without_flags(trained_run):
    detector = synthdet.load(trained_run.best_checkpoint)
    val = records_from_arguments([trained_run.run_dir / "config.yaml"], split="val")
    result = evaluate_records(detector, val, workers=0)
    assert result.metrics["accuracy"] == pytest.approx(trained_run.best_val["accuracy"], abs=1e-9)
    assert result.metrics["roc_auc"] == pytest.approx(trained_run.best_val["roc_auc"], abs=1e-9)
    again = synthdet.load(trained_run.best_checkpoint).predict([r.path for r in val[:8]], workers=0)
    first = detector.predict([r.path for r in val[:8]], workers=0)
    assert [p.prob_synthetic for p in again] == [p.prob_synthetic for p in first]


def test_checkpoint_is_one_safetensors_file_that_never_unpickles(trained_run, monkeypatch):
    path = trained_run.best_checkpoint
    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["synthdet"])
    assert meta["model"]["name"] == "resnet18" and meta["model"]["in_chans"] == 3
    assert meta["features"]["representations"] == ["fft_mag"]
    assert meta["crop"] == "64x64" and meta["class_names"] == ["real", "synthetic"]
    assert len(meta["normalization"]["mean"]) == 3 and meta["threshold"] == 0.5
    assert meta["training"]["data"]["camera-shapes"]["train"]["real"] > 0

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load must not be used to read checkpoints")

    monkeypatch.setattr(torch, "load", refuse)
    detector = synthdet.load(path, device="cpu")
    assert all(p.device.type == "cpu" for p in detector.net.parameters())


def test_training_never_reads_the_test_split(toy_sources, tmp_path, monkeypatch):
    """Training and calibration (everything before the test evaluation) leave the test images alone."""
    read = []
    original = decode.load_image

    def spy(path, *args, **kwargs):
        read.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr("synthdet.data.loader.load_image", spy)
    config = toy_config(small(toy_sources), tmp_path, epochs=1, batch_size=16)
    config.data.workers = 0  # decode in this process so the spy sees every file
    config.data.crop = (32, 32)
    result = train(config, progress=False, test=False)
    with (result.run_dir / "splits.csv").open() as fh:
        test_paths = {row["path"] for row in csv.DictReader(fh) if row["split"] == "test"}
    assert test_paths and read
    assert not test_paths & set(read)


def test_resume_continues_after_the_last_finished_epoch(toy_sources, tmp_path):
    config = toy_config(small(toy_sources), tmp_path, epochs=1, batch_size=16, max_steps_per_epoch=3)
    config.data.crop = (32, 32)
    first = train(config, progress=False)
    stats_before = synthdet.load(first.run_dir / "last.safetensors").meta.normalization
    config.train.epochs = 2
    second = train(config, resume=first.run_dir, progress=False)
    assert second.run_dir == first.run_dir
    epochs = [json.loads(line)["epoch"] for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert synthdet.load(first.run_dir / "last.safetensors").meta.normalization == stats_before


def test_a_split_without_both_classes_is_refused(toy_sources, tmp_path):
    config = toy_config([s for s in toy_sources if s["label"] == "real"], tmp_path)
    with pytest.raises(TrainingError, match="no synthetic images"):
        train(config, progress=False)


def test_a_crop_too_small_for_the_model_is_a_config_error_before_anything_is_written(toy_sources, tmp_path):
    config = toy_config(small(toy_sources, 8), tmp_path)
    config.model.name, config.features.representations, config.data.crop = "enet", ["rgb"], (32, 32)
    with pytest.raises(ConfigError, match=r"data.crop: model 'enet' cannot take 32x32 crops .*use a larger crop"):
        train(config, progress=False)
    assert not any(tmp_path.iterdir())  # no half-made run directory


def test_awkward_files_through_train_evaluate_and_predict(toy_sources, awkward_folder, checkpoint, tmp_path):
    bad = {name for name, reason in AWKWARD_FILES.items() if reason}
    good = set(AWKWARD_FILES) - bad

    # train: the awkward folder is an all-train source; every bad file is logged once, by name
    sources = small(toy_sources) + [{"name": "awkward", "path": str(awkward_folder), "label": "real",
                                     "split": "train"}]
    config = toy_config(sources, tmp_path, epochs=1, batch_size=16)
    config.data.balance = False  # a plain shuffle visits every file each epoch
    config.data.crop = (48, 48)
    result = train(config, progress=False)
    with (result.run_dir / "skipped.csv").open() as fh:
        skipped = {row["path"].rsplit("/", 1)[-1]: row["reason"] for row in csv.DictReader(fh)}
    assert set(skipped) == bad
    for name in bad:
        assert AWKWARD_FILES[name] in skipped[name]

    # evaluate: bad files reported, the rest scored
    detector = synthdet.load(checkpoint)
    evaluation = evaluate_records(detector, records_from_arguments([awkward_folder], label="real"), workers=0)
    assert {p.rsplit("/", 1)[-1] for p in evaluation.skipped.entries} == bad
    assert evaluation.metrics["n"] == len(good)

    # predict: one result per file, errors carry the reason
    predictions = {p.input.rsplit("/", 1)[-1]: p for p in detector.predict(awkward_folder)}
    assert set(predictions) == set(AWKWARD_FILES)
    for name in bad:
        assert not predictions[name].ok and AWKWARD_FILES[name] in predictions[name].error
    for name in good:
        assert predictions[name].ok and 0.0 <= predictions[name].prob_synthetic <= 1.0
    assert "reflect-padded" in predictions["tiny_32.png"].note


def test_synthdet_train_calibrates_tests_and_reports(trained_run):
    """The Python API runs the whole sequence, as the CLI does."""
    run = RunDir(trained_run.run_dir)
    assert trained_run.calibration.n > 0 and run.calibration.is_file()
    assert trained_run.test.metrics["n"] == sum(1 for r in read_split_csv(run.splits, "test"))
    assert run.test.metrics.is_file() and run.report_html.is_file()
    assert "Missing" not in run.report_md.read_text()
