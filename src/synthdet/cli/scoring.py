"""``synthdet predict``, ``score``, ``benchmark`` and ``export``: put a model to work on images.

``predict`` runs on the least memory of all commands (its pixel budget is set for it), so
nothing here imports the training or evaluation modules at the top.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from synthdet.cli.common import (
    BATCH_SIZE,
    CHANNELS_LAST,
    COMPILE,
    DEVICE,
    MODEL,
    PRECISION,
    THRESHOLD,
    WORKERS,
    err,
    out,
)
from synthdet.config import ConfigError
from synthdet.data.decode import load_image
from synthdet.data.sources import IgnoredFiles, records_from_arguments
from synthdet.evaluation.tables import fmt
from synthdet.inference import batch
from synthdet.inference.detector import Detector, PredictOptions
from synthdet.inference.inputs import expand_inputs
from synthdet.inference.onnx_export import export_onnx
from synthdet.inference.video import VideoError, check_sampling, is_video, predict_video
from synthdet.rundir import prepare_folder


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
    threshold: Optional[float] = THRESHOLD,
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
    threshold: Optional[float] = THRESHOLD,
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
