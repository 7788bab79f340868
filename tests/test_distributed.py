"""DDP training with torchrun: two CPU processes (gloo) train like one and write one run."""

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

import synthdet
from conftest import TRAINED_RUN_EPOCHS, toy_config
from synthdet.data.sources import read_split_csv
from synthdet.evaluation.evaluate import evaluate_records
from synthdet.training.distributed import DistributedWeightedSampler

#: How far the best validation accuracy of a 2-process run may fall from the 1-process run's.
#: Both see the same number of batches of the same global size, but different random draws;
#: over seeds 0 and 1 the difference was at most 0.03 (see README, "Scaling out").
ACCURACY_TOLERANCE = 0.05


def test_distributed_weighted_sampler_gives_each_rank_a_distinct_part_of_one_balanced_draw():
    weights = torch.tensor([1 / 900] * 900 + [1 / 100] * 100)
    parts = [DistributedWeightedSampler(weights, 1000, rank, 2, seed=3) for rank in (0, 1)]
    whole = DistributedWeightedSampler(weights, 1000, 0, 1, seed=3)
    for sampler in (*parts, whole):
        sampler.set_epoch(2)
    draws = [list(p) for p in parts]
    assert len(draws[0]) == len(draws[1]) == len(parts[0]) == 500
    assert [i for pair in zip(*draws) for i in pair] == list(whole)  # rank r holds positions r, r + 2, ...
    for draw in draws:
        assert sum(i >= 900 for i in draw) / len(draw) == pytest.approx(0.5, abs=0.07)  # 1 in 10 -> 1 in 2
    parts[0].set_epoch(3)
    assert list(parts[0]) != draws[0]


def train_with_torchrun(*args):
    proc = subprocess.run([sys.executable, "-m", "synthdet", "train", "--nproc", "2", *map(str, args)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_two_processes_train_like_one_and_write_one_run(toy_sources, trained_run, tmp_path):
    """The shared single-process run (conftest) against the same config on 2 processes, resumed once."""
    config = toy_config(toy_sources, tmp_path / "runs", epochs=TRAINED_RUN_EPOCHS - 1, lr=5e-4)
    (tmp_path / "ddp.yaml").write_text(config.to_yaml())
    train_with_torchrun(tmp_path / "ddp.yaml", "--no-test")
    run = tmp_path / "runs" / "toy"
    proc = train_with_torchrun("--resume", run, f"train.epochs={TRAINED_RUN_EPOCHS}")

    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["toy"]  # one run, written by one process
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, TRAINED_RUN_EPOCHS + 1))
    # every epoch covers as many images as one process's epoch, split between the two
    assert [h["train_images"] for h in history] == [h["train_images"] for h in trained_run.history]
    best = max(h["val_accuracy"] for h in history)
    assert best == pytest.approx(trained_run.best_val["accuracy"], abs=ACCURACY_TOLERANCE)
    assert proc.stdout.count("best epoch") == 1 and (run / "test" / "metrics.json").is_file()

    # the checkpoint is a single-process checkpoint (no DDP "module." prefix) that scores as validation did
    detector = synthdet.load(run / "best.safetensors")
    assert not any(k.startswith("module.") for k in detector.net.state_dict())
    val = read_split_csv(run / "splits.csv", "val")
    result = evaluate_records(detector, val, workers=0)
    summary = json.loads((run / "summary.json").read_text())
    assert result.metrics["accuracy"] == pytest.approx(summary["best_val"]["accuracy"], abs=1e-9)


#: Repetitions of the README's torchrun command in the stress test (more: SYNTHDET_STRESS_RUNS=10).
STRESS_RUNS = int(os.environ.get("SYNTHDET_STRESS_RUNS", 2))
#: Wall-clock limit of one 2-epoch toy run on 2 processes: a hang fails the test instead of the suite.
RUN_LIMIT_S = 300
#: A short collective timeout for the stall test (the default is 300 s).
STALL_TIMEOUT_S = 15


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> Path:
    """The README's toy data (`synthdet toy-data toy`), smaller: runs of it are repeated."""
    root = tmp_path_factory.mktemp("readme-toy")
    subprocess.run([sys.executable, "-m", "synthdet", "toy-data", "toy", "--images-per-source", "120"], cwd=root,
                   check=True, capture_output=True)
    return root


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "synthdet", "train", "toy/toy.yaml", *args]


@pytest.mark.slow
def test_the_readme_torchrun_command_finishes_every_time_with_workers_on(toy_folder):
    """The command that once hung after epoch 1 (a worker forked under threads), repeated, each run timed."""
    commands = [torchrun("train.epochs=2", f"output_dir=runs-{i}", "data.workers=2") for i in range(STRESS_RUNS)]
    commands.append([sys.executable, "-m", "synthdet", "train", "--nproc", "2", "toy/toy.yaml", "train.epochs=2",
                     "output_dir=runs-nproc", "data.workers=2", "--no-test"])
    for command in commands:
        started = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=toy_folder, capture_output=True, text=True, timeout=RUN_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(command[-4:])} did not finish within {RUN_LIMIT_S} s")
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "best epoch" in proc.stdout, time.monotonic() - started


def rank_process(launcher: subprocess.Popen, rank: int, timeout: float = 120) -> psutil.Process:
    """The worker process of ``rank`` under a torchrun launcher, once its run has begun training."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "synthdet" in " ".join(child.cmdline()):
                    return child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    raise AssertionError(f"rank {rank} never started")


def run_until_broken(folder: Path, log: Path, break_rank, env: dict) -> tuple[int, float, str]:
    """Start a long toy run, break rank 1 once training has begun; the exit code, seconds to exit, output."""
    with log.open("w") as out:
        launcher = subprocess.Popen(torchrun("train.epochs=50", f"output_dir={log.stem}"), cwd=folder, stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, **env})
        victim = rank_process(launcher, 1)
        deadline = time.monotonic() + 120
        while not list((folder / log.stem).glob("*/config.yaml")) and time.monotonic() < deadline:
            time.sleep(0.2)  # the run folder exists: data are read, the process group trains
        time.sleep(3)
        break_rank(victim)
        broken = time.monotonic()
        try:
            code = launcher.wait(timeout=STALL_TIMEOUT_S + 120)
        finally:
            for p in [victim, *psutil.Process(launcher.pid).children(recursive=True)] if launcher.poll() is None \
                    else [victim]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            launcher.kill()
    return code, time.monotonic() - broken, log.read_text()


@pytest.mark.slow
def test_a_stalled_rank_ends_the_job_within_the_collective_timeout(toy_folder, tmp_path):
    code, seconds, output = run_until_broken(toy_folder, tmp_path / "stalled.log", lambda p: p.suspend(),
                                             {"SYNTHDET_COLLECTIVE_TIMEOUT": str(STALL_TIMEOUT_S)})
    assert code != 0
    assert "error: rank 0 of 2 stopped at epoch" in output, output[-3000:]
    assert f"within {STALL_TIMEOUT_S} s (SYNTHDET_COLLECTIVE_TIMEOUT)" in output
    assert seconds < STALL_TIMEOUT_S + 60
    print(next(line for line in output.splitlines() if "error: rank" in line), f"({seconds:.0f} s after the stall)")


@pytest.mark.slow
def test_a_killed_rank_ends_the_job(toy_folder, tmp_path):
    code, seconds, output = run_until_broken(toy_folder, tmp_path / "killed.log", lambda p: p.kill(), {})
    assert code != 0 and seconds < 60
    assert "rank: 1" in output or "rank 1" in output, output[-3000:]
