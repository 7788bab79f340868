"""The folders synthdet writes, with every file named once.

Training, calibration, evaluation, robustness, protocols and the report all read and
write these folders; naming each file here keeps that contract in one place, and lets
the report say which expected file is missing instead of silently leaving a section out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """A training run, evaluation, robustness sweep or protocol folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # training
    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.root / "splits.csv"

    @property
    def metrics_log(self) -> Path:
        """One JSON line per epoch."""
        return self.root / "metrics.jsonl"

    @property
    def resume(self) -> Path:
        return self.root / "resume.pt"

    @property
    def best(self) -> Path:
        return self.root / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def stage1(self) -> "RunDir":
        """The embedding network's own run, inside a one-class run."""
        return RunDir(self.root / "stage1")

    # calibration
    @property
    def calibration(self) -> Path:
        return self.root / "calibration.json"

    @property
    def reliability(self) -> Path:
        return self.root / "reliability.png"

    # evaluation (a run's test/ and held_out/ folders are evaluations too)
    @property
    def test(self) -> "RunDir":
        return RunDir(self.root / "test")

    @property
    def held_out(self) -> "RunDir":
        return RunDir(self.root / "held_out")

    @property
    def robustness_sweep(self) -> "RunDir":
        """Where a sweep of this run's checkpoint is kept when it is filed inside the run."""
        return RunDir(self.root / "robustness")

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def metrics_md(self) -> Path:
        return self.root / "metrics.md"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def skipped(self) -> Path:
        return self.root / "skipped.csv"

    def figure(self, name: str) -> Path:
        return self.root / f"{name}.png"

    # robustness and protocols
    @property
    def robustness_csv(self) -> Path:
        return self.root / "robustness.csv"

    @property
    def robustness(self) -> Path:
        return self.root / "robustness.json"

    @property
    def protocol(self) -> Path:
        return self.root / "protocol.json"

    @property
    def protocol_md(self) -> Path:
        return self.root / "protocol.md"

    # report
    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def is_training_run(self) -> bool:
        return self.config.is_file() and self.metrics_log.is_file()


def new_run_dir(output_dir: Path, name: str) -> RunDir:
    """``output_dir/name``, or ``name-2``, ``name-3``... if taken (never overwrite a run)."""
    candidate = Path(output_dir) / name
    for i in itertools.count(2):
        if not candidate.exists():
            return RunDir(candidate)
        candidate = Path(output_dir) / f"{name}-{i}"
