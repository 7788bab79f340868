"""What the command modules share: the consoles, the options several commands take, and
the errors that are the user's to fix (exit 2, one line, no traceback)."""

from __future__ import annotations

import errno
import inspect
import os
import sys
from typing import Callable, Optional

import typer
from rich.console import Console

from synthdet import weights
from synthdet.checkpoint import CheckpointError
from synthdet.config import ConfigError
from synthdet.data.shards import ShardError
from synthdet.data.sources import SourceError
from synthdet.inference.batch import ScoreError
from synthdet.rundir import OutputError
from synthdet.training.distributed import RankFailure
from synthdet.training.trainer import TrainingError

# Plain lines are never re-wrapped (scripts parse them); when piped, tables get room
# for long source names instead of the 80-column default.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)

# Options several commands share, declared once so they read (and default) alike.
DATA = typer.Option(..., "--data", "-d", help="config .yaml, folder or .csv manifest (repeatable)")
SOURCES = typer.Option(None, "--data", "-d",
                       help="replace the config's sources: folder, .csv manifest or .yaml (repeatable)")
BATCH_SIZE = typer.Option(32, min=1, help="images per batch")
WORKERS = typer.Option(-1, min=-1, help="decoding processes (-1: one per core)")
DEVICE = typer.Option("auto", help="auto (CUDA, then Apple MPS, then CPU), cpu, cuda[:N] or mps")
MODEL = typer.Option(None, "--model", "-m",
                     help="checkpoint (.safetensors or exported .onnx); default: the shipped detector (synthdet info)")
LABEL = typer.Option(None, help="label of every image in a folder without class subfolders")
THRESHOLD = typer.Option(None, help="override the checkpoint's decision threshold")

# Speed switches shared by the commands that run inference in bulk (none changes preprocessing).
PRECISION = typer.Option("auto", help="fp32, bf16 (faster only where bfloat16 is native: GPUs, AVX512-BF16/AMX "
                                       "CPUs), or auto: bf16 for frozen-backbone probes where native, else fp32")
CHANNELS_LAST = typer.Option(False, "--channels-last", help="channels-last memory layout for the backbone")
COMPILE = typer.Option(False, "--compile", help="torch.compile the network (slow start, faster afterwards)")

#: Errors that are the user's to fix: shown as one clear line, no traceback. OSError covers
#: a file that cannot be read or written (a full disk, standard output to a full device).
USER_ERRORS = (ConfigError, SourceError, CheckpointError, TrainingError, OutputError, OSError, weights.WeightsError,
               ShardError, ScoreError, RankFailure)

#: Write errors that, without a file name, come from standard output: every file synthdet
#: writes goes through rundir.atomic_path, whose errors name the file.
STDOUT_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EPIPE)


def describe(exc: BaseException) -> str:
    """A user error as one line; when standard output is what failed, say so and stop writing to it."""
    if not isinstance(exc, OSError):
        return str(exc)
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    if exc.errno not in STDOUT_ERRNOS:
        return str(exc)
    try:  # what could not be written must not fail again, as noise, when Python exits
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        pass
    return f"cannot write to standard output ({exc.strerror or exc})"


def add_command(app: typer.Typer, function: Callable, name: Optional[str] = None) -> None:
    """Register ``function`` as a command of ``app``; its docstring is the help.

    The docstring's paragraphs are kept and the line breaks inside them dropped, so the
    terminal wraps the help to its own width instead of breaking lines where the source does.
    """
    paragraphs = (p.split() for p in inspect.cleandoc(function.__doc__ or "").split("\n\n"))
    app.command(name, help="\n\n".join(" ".join(words) for words in paragraphs if words))(function)
