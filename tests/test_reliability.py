"""Malformed and awkward inputs through every entry point: predict (CLI and API), evaluate, train, service.

Whatever the input, there is no traceback, no confident score for a file that could not be
decoded (it is an error with a reason), and every file is accounted for: scored, refused
with a reason, or counted as ignored by the folder scan.
"""

import csv
import json
import math
from pathlib import Path

import pytest

import synthdet
from conftest import toy_config
from corpus import IGNORED, IMAGES, VIDEOS, write_images, write_videos
from synthdet.config import SplitFractions
from test_cli import synthdet as run_synthdet

CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_v1" / "cifake_cnn_rgb_fft.safetensors"
BAD = {name for name, reason in IMAGES.items() if reason}
GOOD = set(IMAGES) - BAD
IGNORED_LINE = "ignored 4 file(s): 2 hidden, 2 with other extensions"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("corpus") / "images")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_videos(tmp_path_factory.mktemp("videos"))


def assert_outcome(name: str, row: dict, expected: str | None) -> None:
    """A scored row has a finite probability and a label; a refused one only its reason."""
    if expected is None:
        assert not row.get("error"), (name, row)
        assert math.isfinite(row["prob_synthetic"]) and 0 <= row["prob_synthetic"] <= 1, (name, row)
        assert row["label"] in ("real", "synthetic"), (name, row)
    else:
        assert expected in row["error"], (name, row)
        assert row.get("label") is None and row.get("prob_synthetic") is None, (name, row)


def test_the_corpus_holds_what_it_documents(images):
    assert sorted(p.name for p in images.iterdir()) == sorted([*IMAGES, *IGNORED])


@pytest.mark.slow
def test_predict_on_the_command_line_accounts_for_every_input(images, videos, tmp_path):
    # broken videos first: the inputs after them must still be processed and reported
    proc = run_synthdet("predict", "-m", CHECKPOINT, images, *(videos / name for name in VIDEOS), "--json",
                        "--out", tmp_path / "frames")
    assert "Traceback" not in proc.stdout + proc.stderr
    rows = {Path(row["input"]).name: row for row in map(json.loads, proc.stdout.splitlines())}
    assert set(rows) == {*IMAGES, *VIDEOS}
    for name, expected in {**IMAGES, **VIDEOS}.items():
        assert_outcome(name, rows[name], expected)
    assert all(rows[name]["n_tiles"] <= 64 for name in GOOD) and rows["line_1x5000000.png"]["n_tiles"] == 64
    assert "decoded at 1/2 scale" in rows["camera_24mp.jpg"]["note"]
    assert "decoding stopped after frame" in rows["corrupt_mid.mkv"]["note"]
    assert 0 < rows["corrupt_mid.mkv"]["n_frames"] < 20 and rows["clip.mkv"]["n_frames"] > 0
    scored = len(GOOD) + sum(v is None for v in VIDEOS.values())
    assert f"{scored} input(s) scored, {len(rows) - scored} failed; in the folders given, {IGNORED_LINE}" in proc.stderr


def test_predict_in_python_accounts_for_every_image(images):
    results = {Path(p.input).name: p for p in synthdet.load(CHECKPOINT, device="cpu").predict(images, workers=0)}
    assert set(results) == set(IMAGES)
    for name, expected in IMAGES.items():
        assert_outcome(name, results[name].to_dict(), expected)


def test_evaluate_keeps_metrics_and_draws_galleries_of_thin_images(images, tmp_path, cli):
    out = tmp_path / "eval"
    code, stdout, stderr = cli("evaluate", "-m", CHECKPOINT, "--data", images, "--label", "real", "--out", out,
                               "--workers", "0")
    assert code == 0 and "Traceback" not in stdout + stderr
    assert f"n={len(GOOD)}, {len(BAD)} skipped, {IGNORED_LINE}" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n"] == len(GOOD)
    assert {Path(s["path"]).name for s in metrics["skipped"]} == BAD
    assert metrics["ignored"] == {"hidden": 2, "other_extension": 2}
    galleries = [p for p in out.glob("gallery_real_*.png")]
    assert galleries and not (out / "warnings.txt").exists()
    assert IGNORED_LINE in (out / "report.md").read_text()


@pytest.mark.slow
def test_training_lists_every_unusable_file_and_tests_on_thin_images(images, toy_sources, tmp_path):
    sources = [{**s, "max_images": 30} for s in toy_sources] + [
        {"name": "corpus", "path": str(images), "label": "real", "split": "train"},
        {"name": "corpus-test", "path": str(images), "label": "synthetic", "split": "test"},
    ]
    config = toy_config(sources, tmp_path, epochs=1, batch_size=16)
    config.data.splits = SplitFractions(train=0.8, val=0.2, test=0.0)  # the test split is the corpus alone
    config.data.crop, config.data.balance, config.data.workers = (32, 32), False, 0
    result = synthdet.train(config, progress=False)
    run = result.run_dir
    with (run / "skipped.csv").open() as fh:
        skipped = {Path(row["path"]).name for row in csv.DictReader(fh)}
    assert skipped == BAD  # the header check lists them whether or not the sampler draws them
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ignored"] == {"hidden": 4, "other_extension": 4}  # the corpus folder is scanned twice
    test = json.loads((run / "test" / "metrics.json").read_text())
    assert test["overall"]["n"] == len(GOOD) and {Path(s["path"]).name for s in test["skipped"]} == BAD
    assert list((run / "test").glob("gallery_synthetic_*.png")) and not (run / "test" / "warnings.txt").exists()
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


#: What the service answers for each refused file: 413 over the budget, 415 no image at all, 422 damaged.
STATUS = {"too large": 413, "not an image": 415}


def test_the_service_answers_every_file(images):
    from fastapi.testclient import TestClient

    from synthdet.service.app import create_app

    client = TestClient(create_app(CHECKPOINT, device="cpu"))
    for name, expected in IMAGES.items():
        response = client.post("/v1/predict", files=[("files", (name, (images / name).read_bytes()))])
        if expected is None:
            assert response.status_code == 200, (name, response.text)
            (result,) = response.json()["results"]
            assert_outcome(name, result, None)
        else:
            assert response.status_code == STATUS.get(expected, 422), (name, response.text)
            assert expected in response.json()["detail"]
    everything = [("files", (name, (images / name).read_bytes())) for name in IMAGES]
    results = client.post("/v1/predict", files=everything).json()["results"]
    assert [r["input"] for r in results] == list(IMAGES)
    for result, (name, expected) in zip(results, IMAGES.items()):
        assert_outcome(name, result, expected)
    assert "decoded at 1/2 scale" in results[list(IMAGES).index("camera_24mp.jpg")]["note"]


def test_videos_report_one_clear_error_or_the_frames_before_the_damage(videos):
    from synthdet.inference.video import VideoError, predict_video

    detector = synthdet.load(CHECKPOINT, device="cpu")
    damaged = predict_video(detector, videos / "corrupt_mid.mkv", fps=None)
    assert 0 < len(damaged.frames) < 20 and damaged.note.startswith("decoding stopped after frame")
    assert len(predict_video(detector, videos / "clip.mkv", fps=None).frames) == 12
    for name in ("audio_only.mp4", "not_a_video.mp4"):
        with pytest.raises(VideoError, match=VIDEOS[name]):
            predict_video(detector, videos / name)
