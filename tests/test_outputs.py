"""Writing results: atomic files, output folders checked before scoring, clear write errors, best-effort figures.

Also the command line's contract for bad options: one line on stderr and exit code 2.
"""

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import synthdet
from conftest import toy_config
from synthdet.data.sources import records_from_arguments
from synthdet.evaluation import plots
from synthdet.evaluation.evaluate import evaluate_records, write_evaluation
from synthdet.evaluation.report import write_report
from synthdet.inference.detector import Detector
from synthdet.rundir import OutputError, RunDir, atomic_path, write_atomic

CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_v1" / "cifake_cnn_rgb_fft.safetensors"
IMAGE = Path(__file__).parent / "data" / "checkpoint_v1" / "input_0.png"


@pytest.fixture
def never_scores(monkeypatch):
    """Fail the test if any image is scored."""

    def refuse(*args, **kwargs):
        raise AssertionError("an image was scored before the output folder was checked")

    monkeypatch.setattr(Detector, "score_items", refuse)


@pytest.mark.parametrize("args, message", [
    (["--threshold", "nan"], "threshold must be in (0, 1), got nan"),
    (["--threshold", "2"], "threshold must be in (0, 1), got 2.0"),
    (["--batch-size", "0"], "Invalid value for '--batch-size'"),
    (["--workers", "-3"], "Invalid value for '--workers'"),
    (["--precision", "fp8"], "precision must be one of fp32, bf16, got 'fp8'"),
    (["--device", "gpu"], "unknown device 'gpu'"),
    (["--overlap", "1.5"], "overlap must be in [0, 1)"),
])
def test_bad_predict_options_are_one_line_errors_with_exit_code_2(cli, args, message):
    code, out, err = cli("predict", "-m", CHECKPOINT, IMAGE, *args)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_is_a_clear_error(cli):
    code, _, err = cli("predict", "-m", CHECKPOINT, IMAGE, "--device", "cuda")
    assert code == 2 and "CUDA is not available here" in err


def test_info_checks_the_whole_checkpoint(cli, tmp_path):
    code, out, _ = cli("info", CHECKPOINT, "--json")
    assert code == 0 and json.loads(out)["model"]["name"] == "cifake_cnn"
    broken = tmp_path / "broken.safetensors"
    shutil.copy(CHECKPOINT, broken)
    meta = synthdet.load(broken).meta
    tensors = {k: v for k, v in synthdet.load(broken).net.state_dict().items() if k != "backbone.fc3.weight"}
    from synthdet.checkpoint import save_checkpoint

    save_checkpoint(broken, tensors, meta)
    code, out, err = cli("info", broken)
    assert code == 2 and f"{broken}: tensors do not fit" in err and "missing backbone.fc3.weight" in err


def test_an_output_folder_under_a_file_fails_before_any_image_is_scored(cli, never_scores, tmp_path):
    (tmp_path / "file").write_text("a regular file")
    folder = Path(__file__).parent / "data" / "checkpoint_v1"
    code, _, err = cli("evaluate", "-m", CHECKPOINT, "--data", folder, "--label", "real",
                       "--out", tmp_path / "file" / "eval")
    assert code == 2 and "cannot write output here" in err and "Traceback" not in err
    code, _, err = cli("predict", "-m", CHECKPOINT, IMAGE, "--heatmap", tmp_path / "file" / "maps")
    assert code == 2 and "cannot write output here" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_any_image_is_scored(cli, never_scores, tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    code, _, err = cli("predict", "-m", CHECKPOINT, IMAGE, "--heatmap", tmp_path / "ro")
    assert code == 2 and "cannot write output here (Permission denied)" in err


def test_a_failed_write_to_standard_output_is_one_message_and_exit_code_2(tmp_path, awkward_folder):
    """As ``--csv > /dev/full``: here a file size limit makes the write fail (EFBIG)."""

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, 200))

    with (tmp_path / "out.csv").open("w") as stdout:
        proc = subprocess.run([sys.executable, "-m", "synthdet", "predict", "-m", str(CHECKPOINT), str(awkward_folder),
                               "--csv", "--workers", "0"], stdout=stdout, stderr=subprocess.PIPE, text=True,
                              preexec_fn=limit_file_size)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: cannot write to standard output (File too large)"
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_atomic_writes_leave_the_old_file_when_writing_fails(tmp_path):
    path = write_atomic(tmp_path / "metrics.json", "{}")
    with pytest.raises(OutputError, match=r"metrics.json: cannot write \(No space left on device\)"):
        with atomic_path(path) as tmp:
            tmp.write_text('{"half": ')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_full_disk_during_training_leaves_no_epoch_without_its_checkpoint(toy_sources, tmp_path, monkeypatch):
    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("synthdet.checkpoint.save_file", full_disk)
    config = toy_config([{**s, "max_images": 20} for s in toy_sources], tmp_path, epochs=2, batch_size=16,
                        max_steps_per_epoch=2)
    config.data.crop, config.data.workers = (32, 32), 0
    with pytest.raises(OutputError, match=r"last.safetensors: cannot write \(No space left on device\)"):
        synthdet.train(config, progress=False)
    (run,) = tmp_path.iterdir()
    assert not (run / "metrics.jsonl").exists() and not list(run.glob("*.safetensors"))
    assert not list(run.glob(".*.tmp"))


def test_a_figure_that_cannot_be_drawn_costs_no_metrics(tmp_path, monkeypatch, awkward_folder):
    detector = synthdet.load(CHECKPOINT, device="cpu")
    result = evaluate_records(detector, records_from_arguments([awkward_folder], label="real"), workers=0)

    def broken(*args, **kwargs):
        raise ValueError("cannot draw this")

    monkeypatch.setattr(plots, "gallery", broken)
    write_evaluation(result, tmp_path)
    write_report(tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["overall"]["n"] == result.metrics["n"]
    assert (tmp_path / "predictions.csv").is_file() and (tmp_path / "confusion.png").is_file()
    warnings = (tmp_path / "warnings.txt").read_text().splitlines()
    assert len(warnings) == 4 and "gallery_real_correct figure could not be written (ValueError" in warnings[0]
    assert "## Warnings" in (tmp_path / "report.md").read_text()


def test_galleries_draw_images_of_any_aspect(tmp_path):
    rng = np.random.default_rng(0)
    for shape in ((3, 4000), (90000, 1), (1, 1)):
        Image.fromarray(rng.integers(0, 256, (*shape[::-1], 3), dtype=np.uint8)).save(tmp_path / f"{shape}.png")
    items = [(str(p), 0.9) for p in sorted(tmp_path.glob("*.png"))]
    assert plots.gallery(items, "thin", tmp_path / "gallery.png").stat().st_size > 1000


def test_best_effort_returns_what_happened_and_notes_failures(tmp_path):
    run = RunDir(tmp_path).prepare()
    assert run.best_effort("a figure", lambda: None) is True and not run.warnings.exists()
    assert run.best_effort("a figure", lambda: 1 / 0) is False
    assert run.warnings.read_text() == "a figure could not be written (ZeroDivisionError: division by zero)\n"
