import json

import numpy as np
import pytest
from PIL import Image

import synthdet
from synthdet.data.sources import read_split_csv
from synthdet.data.transforms import center_crop
from synthdet.evaluation.evaluate import evaluate_records, write_evaluation
from synthdet.evaluation.report import write_report
from synthdet.inference.detector import PredictOptions
from synthdet.data.transforms import EvalTransform
from synthdet.evaluation.robustness import Perturbation, Perturbed, default_sweep, run_robustness, write_robustness


@pytest.mark.parametrize("perturbation", default_sweep(), ids=lambda p: p.label)
def test_every_perturbation_yields_the_crop_size(perturbation):
    image = np.random.default_rng(0).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    out = Perturbed(EvalTransform((64, 96)), perturbation)(image)
    assert out.shape == (64, 96, 3) and out.dtype == np.uint8
    if perturbation.kind == "none":
        assert np.array_equal(out, center_crop(image, 64, 96))
    elif perturbation.kind in ("jpeg", "blur", "noise", "downscale"):
        assert not np.array_equal(out, center_crop(image, 64, 96))


def test_the_sweep_is_the_documented_one():
    levels = {}
    for p in default_sweep():
        levels.setdefault(p.kind, []).append(p.level)
    assert levels == {"none": [0], "jpeg": [95, 90, 75, 50, 30], "downscale": [0.9, 0.75, 0.5],
                      "blur": [0.5, 1, 2], "noise": [0.01, 0.02, 0.05], "crop": [0.75, 0.5, 0.25]}


@pytest.fixture(scope="module")
def robustness_dir(trained_run, tmp_path_factory):
    detector = synthdet.load(trained_run.best_checkpoint)
    test = read_split_csv(trained_run.run_dir / "splits.csv", "test")
    rows = run_robustness(detector, test, workers=0)
    out = tmp_path_factory.mktemp("robustness")
    write_robustness(rows, out)
    return out, rows


@pytest.mark.slow
def test_jpeg_30_measurably_changes_the_toy_detector_scores(trained_run):
    detector = synthdet.load(trained_run.best_checkpoint)
    paths = [r.path for r in read_split_csv(trained_run.run_dir / "splits.csv", "test")]
    options = PredictOptions(tiles=False, workers=0)
    clean = [p.prob_synthetic for p in detector.score_items(paths, options,
                                                            transform=Perturbed(EvalTransform(detector.crop), Perturbation("none", 0, "")))]
    jpeg30 = [p.prob_synthetic for p in detector.score_items(paths, options,
                                                             transform=Perturbed(EvalTransform(detector.crop), Perturbation("jpeg", 30, "")))]
    assert np.mean(np.abs(np.array(clean) - np.array(jpeg30))) > 0.05


@pytest.mark.slow
def test_robustness_writes_csv_json_and_curves(robustness_dir):
    out, rows = robustness_dir
    assert len(rows) == len(default_sweep()) and rows[0]["perturbation"] == "none"
    assert rows[0]["accuracy"] >= 0.9  # clean test accuracy of the toy detector
    assert json.loads((out / "robustness.json").read_text()) == rows
    assert (out / "robustness.csv").read_text().count("\n") == len(rows) + 1
    image = np.asarray(Image.open(out / "robustness.png").convert("L"))
    assert image.shape[1] > 800 and image.std() > 10  # five panels with curves, not a blank canvas


@pytest.mark.slow
def test_report_of_a_toy_run_renders_every_image_in_headless_chromium(trained_run, robustness_dir, browser):
    run = trained_run.run_dir
    detector = synthdet.load(trained_run.best_checkpoint)
    evaluation = evaluate_records(detector, read_split_csv(run / "splits.csv", "test"), workers=0)
    write_evaluation(evaluation, run / "test")
    robustness_out, _ = robustness_dir
    (run / "robustness").mkdir(exist_ok=True)
    for name in ("robustness.json", "robustness.png"):
        (run / "robustness" / name).write_bytes((robustness_out / name).read_bytes())
    md_path, html_path = write_report(run)

    markdown = md_path.read_text()
    for section in ("## Configuration", "## Data", "## Training", "## Calibration", "## Test split", "## Robustness"):
        assert section in markdown
    linked = [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]
    assert len(linked) >= 10
    for relative in linked:
        png = Image.open(run / relative)
        assert png.size[0] >= 300 and np.asarray(png.convert("L")).std() > 5, relative  # non-empty figure

    browser.get(html_path.as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) == len(linked)
    broken = [alt for alt, complete, width, height in images if not (complete and width > 0 and height > 0)]
    assert broken == []
    assert "Test split" in browser.find_element("tag name", "body").text
