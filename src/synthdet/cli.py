"""The ``synthdet`` command: train, evaluate, robustness, calibrate, report, predict, benchmark, demo, ..."""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from importlib import resources
from pathlib import Path
from typing import List, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from synthdet.checkpoint import CheckpointError, read_metadata
from synthdet.config import ConfigError, config_from_dict, load_config, resolve_paths
from synthdet.data.sources import SourceError, read_split_csv, records_from_arguments, sources_from_arguments
from synthdet.evaluation.evaluate import SOURCE_COLUMNS, EvaluationResult, evaluate_records, fmt, write_evaluation
from synthdet.inference.detector import Detector
from synthdet.training.trainer import CONFIG_FILE, TrainingError, new_run_dir, train as run_training

app = typer.Typer(help="Tell real photographs from synthetic images.", no_args_is_help=True, add_completion=False)
# Plain lines are never re-wrapped (scripts parse them); when piped, tables get room
# for long source names instead of the 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

#: Errors that are the user's to fix: shown as one clear line, no traceback.
USER_ERRORS = (ConfigError, SourceError, CheckpointError, TrainingError, FileNotFoundError)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        app()
    except USER_ERRORS as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        sys.exit(2)


@app.command()
def train(
    args: List[str] = typer.Argument(None, help="CONFIG.yaml followed by key=value overrides"),
    data: Optional[List[str]] = typer.Option(
        None, "--data", "-d", help="replace the config's sources: folder, .csv manifest or .yaml (repeatable)"
    ),
    resume: Optional[Path] = typer.Option(None, help="run directory to continue after its last finished epoch"),
    target_fpr: Optional[float] = typer.Option(
        None, help="choose the threshold on validation for this false-positive rate (e.g. 0.01)"
    ),
    test: bool = typer.Option(True, help="evaluate the best checkpoint on the test split afterwards"),
):
    """Train a detector from a YAML config; the best epoch is chosen on the validation split.

    Afterwards the best checkpoint is calibrated on validation, scored on the test split,
    and RUN_DIR/report.html is written.
    """
    args = list(args or [])
    config_path = None if resume or not args or "=" in args[0] else args.pop(0)
    if resume:
        config_path = resume / CONFIG_FILE
    if config_path is None:
        raise ConfigError("give a config file (synthdet train CONFIG.yaml [key=value ...]) or --resume RUN_DIR")
    config = load_config(config_path, args)
    if data:
        config.data.sources = sources_from_arguments(data)
    if target_fpr is not None:
        config.train.target_fpr = target_fpr
    if not config.data.sources:
        raise ConfigError(f"{config_path}: no data sources; add data.sources or give --data FOLDER")
    result = run_training(config, resume=resume)
    out.print(f"best epoch {result.best_epoch}: val accuracy {fmt(result.best_val['accuracy'])}, "
              f"ROC-AUC {fmt(result.best_val['roc_auc'])}  ->  {result.best_checkpoint}")
    if result.skipped:
        out.print(f"{result.skipped} file(s) skipped, see {result.run_dir / 'skipped.csv'}")
    if test:
        evaluate_test_split(result, config, title="Test split (best checkpoint)")
    report(result.run_dir)


@app.command()
def evaluate(
    target: Path = typer.Argument(..., help="checkpoint (.safetensors); with --protocol, a training config (.yaml)"),
    data: Optional[List[str]] = typer.Option(
        None, "--data", "-d", help="config .yaml, folder or .csv manifest (repeatable)"
    ),
    protocol: str = typer.Option("none", help="none, leave-one-source-out or kfold (these train, from TARGET config)"),
    k: int = typer.Option(5, help="folds for --protocol kfold"),
    group: Optional[List[str]] = typer.Option(
        None, help="NAME=src1,src2: hold these sources out together (leave-one-source-out; repeatable)"
    ),
    split: str = typer.Option("test", help="split of config datasets to score: train, val, test or all"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (metrics, figures, report)"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
    batch_size: int = typer.Option(32, help="images per batch"),
    workers: int = typer.Option(-1, help="decoding processes (-1: one per core)"),
    device: str = typer.Option("auto"),
):
    """Per-source accuracy, precision/recall/F1, ROC-AUC and AP; or a generalization protocol.

    Without --protocol: score checkpoint TARGET on --data. With --protocol
    leave-one-source-out (train on all sources but one, test on it, for each) or kfold,
    TARGET is a training config and one model is trained per held-out unit.
    """
    if protocol != "none":
        run_protocol(target, protocol, k, group or [], data, out_dir)
        return
    if not data:
        raise ConfigError("give --data (a config, folder or manifest) to evaluate on")
    records = records_from_arguments(data, split=split, label=label)
    detector = Detector.load(target, device)
    result = evaluate_records(detector, records, threshold, batch_size, workers, progress=True)
    out_dir = out_dir or new_run_dir(Path("runs/evaluate"), target.parent.name or "eval")
    write_evaluation(result, out_dir)
    print_evaluation(result)
    report(out_dir)


def run_protocol(config_path: Path, protocol: str, k: int, groups: list[str], data: list[str] | None,
                 out_dir: Path | None) -> None:
    from synthdet.evaluation.protocols import PROTOCOL_COLUMNS, kfold, leave_one_source_out, protocol_summary_line

    if config_path.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{config_path}: --protocol trains models, so TARGET must be a training config (.yaml)")
    config = load_config(config_path)
    if data:
        config.data.sources = sources_from_arguments(data)
    named = {}
    for item in groups:
        name, _, members = item.partition("=")
        if not members:
            raise ConfigError(f"--group {item!r} must look like NAME=source1,source2")
        named[name] = [m.strip() for m in members.split(",") if m.strip()]
    out_dir = out_dir or new_run_dir(Path("runs/protocols"), f"{config.name}-{protocol}")
    if protocol == "leave-one-source-out":
        summary = leave_one_source_out(config, out_dir, named, progress=True)
    elif protocol == "kfold":
        summary = kfold(config, out_dir, k, progress=True)
    else:
        raise ConfigError(f"unknown protocol {protocol!r}; use leave-one-source-out or kfold")
    table = Table(*PROTOCOL_COLUMNS, title=summary["protocol"])
    for row in summary["rows"]:
        table.add_row(*(fmt(row.get(c)) for c in PROTOCOL_COLUMNS))
    out.print(table)
    out.print(protocol_summary_line(summary))
    report(out_dir)


@app.command()
def robustness(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors)"),
    data: List[str] = typer.Option(..., "--data", "-d", help="config .yaml, folder or .csv manifest (repeatable)"),
    split: str = typer.Option("test", help="split of config datasets to score"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (CSV, PNG, report)"),
    batch_size: int = typer.Option(32),
    workers: int = typer.Option(-1),
    device: str = typer.Option("auto"),
):
    """Accuracy and ROC-AUC under JPEG, downscaling, blur, noise and smaller crops."""
    from synthdet.evaluation.robustness import run_robustness, write_robustness

    records = records_from_arguments(data, split=split, label=label)
    rows = run_robustness(Detector.load(checkpoint, device), records, batch_size=batch_size, workers=workers,
                          progress=True)
    out_dir = out_dir or new_run_dir(Path("runs/robustness"), checkpoint.parent.name or "robustness")
    write_robustness(rows, out_dir)
    table = Table("perturbation", "level", "n", "accuracy", "ROC-AUC", "mean P(synth)", title="Robustness")
    for row in rows:
        table.add_row(row["perturbation"], f"{row['level']:g}", str(row["n"]), fmt(row["accuracy"]),
                      fmt(row["roc_auc"]), fmt(row["mean_p_synthetic"]))
    out.print(table)
    report(out_dir)


@app.command()
def calibrate(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors) to update in place"),
    data: List[str] = typer.Option(..., "--data", "-d", help="config .yaml, folder or .csv manifest (repeatable)"),
    split: str = typer.Option("val", help="split of config datasets to fit on (never the test split)"),
    target_fpr: Optional[float] = typer.Option(None, help="choose the threshold for this false-positive rate"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="where calibration.json and reliability.png go"),
    device: str = typer.Option("auto"),
):
    """Fit temperature scaling (and optionally a threshold for a target FPR) and store them in CHECKPOINT."""
    from synthdet.evaluation.calibration import calibrate_checkpoint

    records = records_from_arguments(data, split=split)
    result = calibrate_checkpoint(checkpoint, records, target_fpr, out_dir or checkpoint.parent, device)
    out.print(f"temperature {result.temperature:.4g}, threshold {result.threshold:.4g}; ECE {result.ece_before:.4f}"
              f" -> {result.ece_after:.4f} on {result.n} images" + ("  (temperature at its search bound: the "
              "images are separated perfectly, calibration is unreliable)" if result.at_bound else ""))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a training, evaluation, robustness or protocol folder")):
    """Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html."""
    from synthdet.evaluation.report import write_report

    md_path, html_path = write_report(run_dir)
    out.print(f"report: {html_path} (and {md_path.name})")


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors)"),
    inputs: List[str] = typer.Argument(..., help="image files, folders or glob patterns"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
    batch_size: int = typer.Option(32),
    workers: int = typer.Option(-1),
    device: str = typer.Option("auto"),
):
    """Label images as real or synthetic with the probability of synthetic; failures are listed."""
    detector = Detector.load(checkpoint, device)
    predictions = detector.predict_iter(inputs, batch_size, workers, threshold, progress=not (as_json or as_csv))
    failures = scored = 0
    if as_json or as_csv:
        writer = csv.writer(sys.stdout) if as_csv else None
        if writer:
            writer.writerow(["input", "label", "prob_synthetic", "error", "note"])
        for p in predictions:
            failures, scored = failures + (not p.ok), scored + p.ok
            if writer:
                prob = "" if p.prob_synthetic is None else f"{p.prob_synthetic:.6f}"
                writer.writerow([p.input, p.label or "", prob, p.error or "", p.note])
            else:
                print(json.dumps(p.to_dict()), flush=True)
    else:
        table = Table("input", "label", "P(synthetic)", "note / error")
        for p in predictions:
            failures, scored = failures + (not p.ok), scored + p.ok
            if p.ok:
                table.add_row(p.input, p.label, f"{p.prob_synthetic:.3f}", p.note)
            else:
                table.add_row(p.input, "[red]error[/red]", "", p.error)
        out.print(table)
    err.print(f"{scored} image(s) scored, {failures} failed")
    if scored == 0:
        raise typer.Exit(1)


@app.command()
def benchmark(
    checkpoint: Path = typer.Argument(...),
    folder: Path = typer.Argument(..., help="folder whose images all have the same, known label"),
    label: str = typer.Option(..., help="real or synthetic"),
    batch_size: int = typer.Option(32),
    workers: int = typer.Option(-1),
    device: str = typer.Option("auto"),
):
    """Accuracy (and images/second) on a folder of known label."""
    records = records_from_arguments([folder], label=label)
    detector = Detector.load(checkpoint, device)
    started = time.perf_counter()
    result = evaluate_records(detector, records, batch_size=batch_size, workers=workers, progress=True)
    seconds = time.perf_counter() - started
    m = result.metrics
    out.print(f"{folder}: accuracy {fmt(m['accuracy'])} on {m['n']} {label} images "
              f"({len(result.skipped)} unreadable), {len(records) / seconds:.1f} images/s")
    for path, (reason, _) in sorted(result.skipped.entries.items()):
        err.print(f"  skipped {path}: {reason}")


@app.command()
def demo(
    out_dir: Path = typer.Option(Path("synthdet-demo"), "--out", help="where toy data and the run go"),
    images_per_source: int = typer.Option(300, help="toy images per source (4 sources)"),
    epochs: Optional[int] = typer.Option(None, help="override the demo's epochs"),
):
    """Generate toy data, train, and print the per-source test table (a few minutes on 2 CPUs)."""
    from synthdet.data.toy import write_toy_dataset

    started = time.perf_counter()
    out.print(f"writing toy dataset to {out_dir / 'data'} ...")
    sources = write_toy_dataset(out_dir / "data", images_per_source)
    raw = yaml.safe_load(resources.files("synthdet.resources").joinpath("demo.yaml").read_text())
    raw["data"]["sources"] = sources
    raw["output_dir"] = str(out_dir / "runs")
    if epochs:
        raw["train"]["epochs"] = epochs
    config = resolve_paths(config_from_dict(raw, "demo config"), Path.cwd())
    result = run_training(config)
    evaluate_test_split(result, config, title="Demo: test split of the toy data (best checkpoint)")
    report(result.run_dir)
    out.print(f"checkpoint: {result.best_checkpoint}   ({time.perf_counter() - started:.0f} s in all)")
    out.print("try:  synthdet predict " + f"{result.best_checkpoint} {out_dir / 'data' / 'camera-shapes'}")


@app.command("toy-data")
def toy_data(
    out_dir: Path = typer.Argument(..., help="folder to write the four toy sources into"),
    images_per_source: int = typer.Option(300),
    seed: int = typer.Option(0),
):
    """Write the toy dataset and a config (toy.yaml) that trains on it."""
    from synthdet.data.toy import write_toy_dataset

    sources = write_toy_dataset(out_dir, images_per_source, seed=seed)
    raw = yaml.safe_load(resources.files("synthdet.resources").joinpath("demo.yaml").read_text())
    raw["name"] = "toy"
    raw["data"]["sources"] = [{**s, "path": Path(s["path"]).name} for s in sources]
    (out_dir / "toy.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    out.print(f"wrote {len(sources) * images_per_source} images and {out_dir / 'toy.yaml'}")


@app.command("import-cifake")
def import_cifake(
    weights: Path = typer.Argument(..., help="state dict released by jshrdt/aics-project (.pth)"),
    checkpoint: Path = typer.Argument(..., help="synthdet checkpoint to write (.safetensors)"),
    attention: bool = typer.Option(False, help="the SRM-attention variant (SRM_model.pth)"),
):
    """Import a peer project's CIFAKE CNN so it runs through synthdet's evaluate/predict."""
    from synthdet.importers import import_aics_cifake

    out.print(f"wrote {import_aics_cifake(weights, checkpoint, attention)}")


@app.command()
def info(checkpoint: Path = typer.Argument(...)):
    """Print a checkpoint's metadata (model, features, crop, classes, threshold, training summary)."""
    print(read_metadata(checkpoint).model_dump_json(indent=2))


def evaluate_test_split(result, config, title: str) -> EvaluationResult | None:
    """Score the run's test split with its best checkpoint; results go to RUN_DIR/test."""
    records = read_split_csv(result.run_dir / "splits.csv", "test")
    if not records:
        out.print("no test split to evaluate")
        return None
    detector = Detector.load(result.best_checkpoint, config.train.device)
    evaluation = evaluate_records(detector, records, workers=config.data.workers, progress=True)
    write_evaluation(evaluation, result.run_dir / "test")
    print_evaluation(evaluation, title=title)
    return evaluation


def print_evaluation(result: EvaluationResult, title: str = "Evaluation") -> None:
    table = Table("source", "n", "real", "synthetic", "accuracy", "mean P(synth)", "ROC-AUC", title=title)
    for row in result.per_source:
        table.add_row(*(fmt(row[c]) for c in SOURCE_COLUMNS))
    out.print(table)
    m = result.metrics
    out.print(
        f"mean accuracy over sources {fmt(result.mean_source_accuracy)} | overall accuracy {fmt(m['accuracy'])} "
        f"precision {fmt(m['precision'])} recall {fmt(m['recall'])} F1 {fmt(m['f1'])} "
        f"ROC-AUC {fmt(m['roc_auc'])} AP {fmt(m['average_precision'])} | n={m['n']}, "
        f"{len(result.skipped)} skipped"
    )
    for path, (reason, _) in sorted(result.skipped.entries.items()):
        err.print(f"  skipped {path}: {reason}")
