"""DDP training with torchrun: two CPU processes (gloo) train like one and write one run."""

import json
import subprocess
import sys

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
