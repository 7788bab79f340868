"""The ``synthdet`` command: train, evaluate, robustness, calibrate, report, predict, benchmark, demo, ...

One module per group of commands (:mod:`~synthdet.cli.training`, :mod:`~synthdet.cli.evaluation`,
:mod:`~synthdet.cli.scoring`, :mod:`~synthdet.cli.data`, :mod:`~synthdet.cli.weights`,
:mod:`~synthdet.cli.serve`, :mod:`~synthdet.cli.about`); this module puts them in one typer
app, in the order ``synthdet --help`` lists them.

Exit codes: 0 success; 1 when ``predict`` could score nothing, or when a reader of
standard output went away (``| head``); 2 for every error that is the user's to fix
(configuration, data, checkpoint, output folder, a failed write, standard output
included), shown as one line without a traceback.

Training and evaluation modules (scikit-learn, SciPy's optimizers, matplotlib: about
100 MB) are imported by the commands that use them, so ``predict`` stays within the memory
its pixel budget is set for (:mod:`synthdet.data.decode`).
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.markup import escape

from synthdet.cli import about, data, evaluation, scoring, serve, training, weights
from synthdet.cli.common import USER_ERRORS, add_command, describe, err

app = typer.Typer(help="Tell real photographs from synthetic images.", no_args_is_help=True, add_completion=False)
for _function in (training.train, evaluation.evaluate, training.protocol, evaluation.robustness,
                  evaluation.calibrate, evaluation.report, scoring.predict, scoring.score, scoring.export,
                  serve.serve, scoring.benchmark, about.demo, data.toy_data, data.import_cifake, about.info):
    add_command(app, _function)
app.add_typer(weights.app, name="weights")
app.add_typer(data.app, name="data")


def main() -> None:
    """The ``synthdet`` entry point: run the command line, a user's error as one line and exit 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # a failed write to stdout surfaces here, not as noise at exit
    except USER_ERRORS as exc:
        # the message is text, never markup: paths and errors hold brackets ("photo[1].jpg", "[Errno 13]")
        err.print(f"[red]error:[/red] {escape(describe(exc))}", markup=True, highlight=False)
        sys.exit(2)


def __getattr__(name: str):
    """``synthdet.cli.command``: the click command typer builds from ``app`` (the docs render their CLI
    reference from it); built on demand, so running a command does not build it twice."""
    if name == "command":
        return typer.main.get_command(app)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
