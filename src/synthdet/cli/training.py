"""``synthdet train`` and ``synthdet protocol``: fit a detector, and ask whether it generalizes."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from synthdet.cli.common import SOURCES, out
from synthdet.cli.evaluation import print_evaluation, report
from synthdet.config import ConfigError, load_config
from synthdet.data.sources import sources_from_arguments
from synthdet.evaluation.tables import PROTOCOL_COLUMNS, fmt, protocol_summary_line
from synthdet.rundir import RunDir, new_run_dir
from synthdet.runtime import resolve_device
from synthdet.training import distributed


def train(
    args: List[str] = typer.Argument(None, help="CONFIG.yaml followed by key=value overrides"),
    data: Optional[List[str]] = SOURCES,
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


def protocol(
    config_path: Path = typer.Argument(..., metavar="CONFIG", help="training config (.yaml)"),
    kind: str = typer.Option("leave-one-source-out", "--kind", help="leave-one-source-out or kfold"),
    data: Optional[List[str]] = SOURCES,
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
