"""Train -> calibrate -> test -> report: the sequence behind ``synthdet train``, the demo and ``synthdet.train``.

It sits above :mod:`synthdet.training` and :mod:`synthdet.evaluation`, so neither needs
the other, and every way of training a model ends with the same run folder: the best
checkpoint calibrated on validation, scored on the test split, and a report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from synthdet.config import Config
from synthdet.data.sources import ImageRecord, read_split_csv
from synthdet.evaluation.calibration import Calibration, calibrate_checkpoint
from synthdet.evaluation.evaluate import EvaluationResult, evaluate_records, write_evaluation
from synthdet.evaluation.plots import training_curves
from synthdet.evaluation.report import write_report
from synthdet.inference.detector import Detector
from synthdet.models import model_entry
from synthdet.rundir import RunDir
from synthdet.training import distributed
from synthdet.training.one_class import train_one_class
from synthdet.training.probe import train_probe
from synthdet.training.trainer import SupervisedObjective, TrainResult, run_stage

log = logging.getLogger("synthdet.train")


@dataclass
class RunResult(TrainResult):
    """A finished run: the training result plus its calibration and test evaluation."""

    calibration: Calibration | None = None
    test: EvaluationResult | None = None


def train(config: Config, resume: str | Path | None = None, progress: bool = True,
          records: list[ImageRecord] | None = None, test: bool = True, report: bool = True) -> RunResult:
    """Train ``config`` (``resume``: continue that run folder), then calibrate, test and report.

    ``records`` replaces the images of the config's sources (protocols train on subsets).
    ``test=False`` leaves the test split alone (protocols score their held-out images instead).
    Under torchrun every process trains; the main process alone calibrates, tests and reports.
    """
    entry = model_entry(config.model.name)
    if entry.one_class:
        trained = train_one_class(config, resume, progress, records)
    elif entry.frozen_embedding:
        trained = train_probe(config, resume, progress, records)
    else:
        trained = run_stage(config, SupervisedObjective(), resume, progress, records=records)
    run = RunDir(trained.run_dir)
    result = RunResult(**trained.__dict__)
    if not distributed.world().is_main:
        return result
    result.calibration = _calibrate(run, config)
    if trained.history:
        run.best_effort("training curves", training_curves, trained.history, run.curves)
    if test:
        result.test = _evaluate_test_split(run, config, progress)
    if report:
        run.best_effort("report", write_report, run.root)
    return result


def _calibrate(run: RunDir, config: Config) -> Calibration:
    """Temperature (and threshold) of the best checkpoint, fitted on the validation split."""
    val = read_split_csv(run.splits, "val")
    calibration = calibrate_checkpoint(run.best, val, config.train.target_fpr, run.root, config.train.device,
                                       config.data.workers)
    log.info("calibrated on %d validation images: temperature %.3g, threshold %.3g, NLL %.4f -> %.4f "
             "(the fitted objective), ECE %.4f -> %.4f", calibration.n, calibration.temperature,
             calibration.threshold, calibration.nll_before, calibration.nll_after, calibration.ece_before,
             calibration.ece_after)
    return calibration


def _evaluate_test_split(run: RunDir, config: Config, progress: bool) -> EvaluationResult | None:
    """The best checkpoint scored on the run's test split, written to RUN/test."""
    records = read_split_csv(run.splits, "test")
    if not records:
        log.info("no test split to evaluate")
        return None
    detector = Detector.load(run.best, config.train.device)
    evaluation = evaluate_records(detector, records, workers=config.data.workers, progress=progress)
    write_evaluation(evaluation, run.test.root)
    return evaluation
