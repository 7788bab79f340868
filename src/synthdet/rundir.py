"""The folders synthdet writes, with every file named once.

Training, calibration, evaluation, robustness, protocols and the report all read and
write these folders; naming each file here keeps that contract in one place, and lets
the report say which expected file is missing instead of silently leaving a section out.

It also holds the rules for writing them: every file goes to a temporary name and is
renamed into place (:func:`atomic_path`), so a crash or a full disk never leaves a
half-written file; a folder is created and proven writable (:func:`prepare_folder`)
before the first image is scored; and figures and reports are drawn best-effort
(:meth:`RunDir.best_effort`), after the metrics they show are safely on disk.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

log = logging.getLogger("synthdet")


class OutputError(Exception):
    """A file or folder synthdet must write cannot be written; the message names it and says why."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block succeeds.

    On any failure the temporary file is removed and ``path`` is left as it was; an
    ``OSError`` (full disk, read-only folder...) becomes one :class:`OutputError`.
    """
    path = Path(path)
    # A unique name: two processes (or threads) writing the same file at once never share a temporary file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({_reason(exc)})") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write a whole text or binary file atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
    return Path(path)


def prepare_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) and prove it writable, or raise :class:`OutputError`.

    Called before the first image is scored, so a bad output folder costs nothing.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(f"{folder}: cannot write output here ({_reason(exc)})") from exc
    return folder


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

    @property
    def warnings(self) -> Path:
        """What could not be written (a figure, the report), one line each; shown in the report."""
        return self.root / "warnings.txt"

    def is_training_run(self) -> bool:
        return self.config.is_file() and self.metrics_log.is_file()

    def prepare(self) -> "RunDir":
        """Create the folder and prove it writable (:func:`prepare_folder`); forget earlier warnings."""
        prepare_folder(self.root)
        self.warnings.unlink(missing_ok=True)
        return self

    def best_effort(self, what: str, write: Callable, *args) -> bool:
        """``write(*args)`` (a figure, a report); a failure is logged and noted in ``warnings.txt``, never raised.

        Metrics files are written before anything drawn from them, so a figure that cannot
        be drawn (or a disk that fills up meanwhile) never costs results already computed.
        """
        try:
            write(*args)
            return True
        except Exception as exc:  # whatever goes wrong in drawing, the run's results stand
            message = f"{what} could not be written ({type(exc).__name__}: {exc})"
            log.warning("warning: %s: %s", self.root, message)
            with contextlib.suppress(OSError), self.warnings.open("a") as fh:
                fh.write(message + "\n")
            return False


def new_run_dir(output_dir: Path, name: str) -> RunDir:
    """``output_dir/name``, or ``name-2``, ``name-3``... if taken (never overwrite a run)."""
    candidate = Path(output_dir) / name
    for i in itertools.count(2):
        if not candidate.exists():
            return RunDir(candidate)
        candidate = Path(output_dir) / f"{name}-{i}"
