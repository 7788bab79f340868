"""``synthdet evaluate``, ``robustness``, ``calibrate`` and ``report``: how good a model is, and on what."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
from rich.table import Table

from synthdet.cli.common import BATCH_SIZE, DATA, DEVICE, LABEL, MODEL, THRESHOLD, WORKERS, err, out
from synthdet.config import ConfigError
from synthdet.data.sources import IgnoredFiles, records_from_arguments
from synthdet.evaluation.tables import fmt
from synthdet.inference.detector import Detector
from synthdet.rundir import RunDir, new_run_dir, prepare_folder

if TYPE_CHECKING:
    from synthdet.evaluation.evaluate import EvaluationResult


def evaluate(
    data: List[str] = DATA,
    model: Optional[Path] = MODEL,
    split: str = typer.Option("test", help="split of config datasets to score: train, val, test or all"),
    label: Optional[str] = LABEL,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (metrics, figures, report)"),
    threshold: Optional[float] = THRESHOLD,
    tiles: Optional[bool] = typer.Option(
        None, "--tiles/--no-tiles",
        help="score tiles, or one center crop (default: the model's view, else a center crop)",
    ),
    resize: bool = typer.Option(
        False, "--resize", help="downscale each image to the crop size instead (as work on 32x32 models does)"
    ),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
):
    """Per-source accuracy, precision/recall/F1, ROC-AUC and AP of a model on --data.

    Each image is scored as in validation (the model's view, else its center crop); --tiles
    covers it like predict does; --resize downscales it to the crop size instead, the one
    place synthdet resizes for a model not trained that way (to compare with work that
    scores downscaled pictures).
    """
    if tiles and resize:
        raise ConfigError("give --tiles or --resize, not both")
    from synthdet.evaluation.evaluate import evaluate_records, write_evaluation

    ignored = IgnoredFiles()
    records = records_from_arguments(data, split=split, label=label, ignored=ignored)
    detector = Detector.load(model, device)
    run = RunDir(out_dir) if out_dir else new_run_dir(Path("runs/evaluate"), run_name(model, "eval"))
    run.prepare()  # before the first image is scored
    result = evaluate_records(detector, records, threshold, batch_size, workers, progress=True, tiles=tiles,
                              resize=resize, ignored=ignored)
    write_evaluation(result, run.root)
    print_evaluation(result)
    run.best_effort("report", report, run.root)


def robustness(
    data: List[str] = DATA,
    model: Optional[Path] = MODEL,
    split: str = typer.Option("test", help="split of config datasets to score"),
    label: Optional[str] = LABEL,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (CSV, PNG, report)"),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
):
    """Accuracy and ROC-AUC under JPEG, downscaling, blur, noise and smaller crops."""
    from synthdet.evaluation.robustness import run_robustness, write_robustness

    records = records_from_arguments(data, split=split, label=label)
    detector = Detector.load(model, device)
    run = RunDir(out_dir) if out_dir else new_run_dir(Path("runs/robustness"), run_name(model, "robustness"))
    run.prepare()  # before the first image is scored
    rows = run_robustness(detector, records, batch_size=batch_size, workers=workers, progress=True)
    write_robustness(rows, run.root)
    table = Table("perturbation", "level", "n", "accuracy", "ROC-AUC", "mean P(synth)", title="Robustness")
    for row in rows:
        table.add_row(row["perturbation"], f"{row['level']:g}", str(row["n"]), fmt(row["accuracy"]),
                      fmt(row["roc_auc"]), fmt(row["mean_p_synthetic"]))
    out.print(table)
    run.best_effort("report", report, run.root)


def calibrate(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors) to update in place"),
    data: List[str] = DATA,
    split: str = typer.Option("val", help="split of config datasets to fit on (never the test split)"),
    target_fpr: Optional[float] = typer.Option(None, help="choose the threshold for this false-positive rate"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="where calibration.json and reliability.png go"),
    device: str = DEVICE,
):
    """Fit temperature scaling (and optionally a threshold for a target FPR) and store them in CHECKPOINT."""
    from synthdet.evaluation.calibration import calibrate_checkpoint

    records = records_from_arguments(data, split=split)
    for folder in {checkpoint.parent, out_dir or checkpoint.parent}:  # both are written after scoring
        prepare_folder(folder)
    result = calibrate_checkpoint(checkpoint, records, target_fpr, out_dir or checkpoint.parent, device)
    out.print(f"temperature {result.temperature:.4g}, threshold {result.threshold:.4g}; NLL {result.nll_before:.4f}"
              f" -> {result.nll_after:.4f}, ECE {result.ece_before:.4f} -> {result.ece_after:.4f} on {result.n} images"
              + ("  (the fit reached its search bound: the images are separated perfectly, so the temperature "
                 "stays 1)" if result.at_bound else ""))


def report(run_dir: Path = typer.Argument(..., help="a training, evaluation, robustness or protocol folder")):
    """Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html."""
    from synthdet.evaluation.report import write_report

    md_path, html_path = write_report(run_dir)
    out.print(f"report: {html_path} (and {md_path.name})")


def run_name(model: Path | None, fallback: str) -> str:
    """Output folder name for a model: its run folder's name, or ``default`` for the shipped one."""
    return "default" if model is None else (model.parent.name or fallback)


def print_evaluation(result: EvaluationResult, title: str = "Evaluation") -> None:
    """The per-source table and the overall line of an evaluation; each skipped file on standard error."""
    from synthdet.evaluation.evaluate import SOURCE_COLUMNS

    table = Table("source", "n", "real", "synthetic", "accuracy", "mean P(synth)", "ROC-AUC", title=title)
    for row in result.per_source:
        table.add_row(*(fmt(row[c]) for c in SOURCE_COLUMNS))
    out.print(table)
    m = result.metrics
    out.print(
        f"mean accuracy over sources {fmt(result.mean_source_accuracy)} | overall accuracy {fmt(m['accuracy'])} "
        f"precision {fmt(m['precision'])} recall {fmt(m['recall'])} F1 {fmt(m['f1'])} "
        f"ROC-AUC {fmt(m['roc_auc'])} AP {fmt(m['average_precision'])} | n={m['n']}, "
        f"{len(result.skipped)} skipped" + (f", {result.ignored}" if result.ignored.total else "")
    )
    for path, (reason, _) in sorted(result.skipped.entries.items()):
        err.print(f"  skipped {path}: {reason}")
