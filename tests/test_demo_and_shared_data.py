"""The README's promises: the demo reaches >= 95% on toy data; evaluate runs on ../shared/data."""

import json
import re
import subprocess
import sys

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def test_demo_prints_a_per_source_table_with_high_mean_accuracy_then_scores_public_images(tmp_path, pretrained):
    public = tmp_path / "public"  # one small public set (12 images) stands in for the five, to keep CI short
    public.mkdir()
    if (SHARED_DATA / "gan-examples").is_dir():
        pretrained("clip_vit_b16")
        (public / "gan-examples").symlink_to(SHARED_DATA / "gan-examples")
    proc = subprocess.run([sys.executable, "-m", "synthdet", "demo", "--out", str(tmp_path / "demo"),
                           "--public", str(public)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for source in ("render-shapes", "render-terrain", "camera-shapes", "camera-terrain"):
        assert source in proc.stdout
    mean = float(re.search(r"mean accuracy over sources ([0-9.]+)", proc.stdout).group(1))
    assert mean >= 0.95, proc.stdout
    if (public / "gan-examples").exists():
        assert "The default detector on public images it never saw" in proc.stdout
        metrics = json.loads((tmp_path / "demo" / "default-detector" / "metrics.json").read_text())
        assert metrics["overall"]["n"] == 12 and metrics["overall"]["roc_auc"] > 0.8  # measured 0.944


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")
def test_evaluate_runs_on_the_shared_public_image_sets(checkpoint, tmp_path):
    sets = sorted(p for p in SHARED_DATA.iterdir() if (p / "real").is_dir())
    args = [a for s in sets for a in ("--data", str(s))]
    proc = subprocess.run([sys.executable, "-m", "synthdet", "evaluate", "-m", str(checkpoint), *args, "--out",
                           str(tmp_path / "eval")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = sum(1 for s in sets for f in s.rglob("*") if f.is_file() and f.parent.name in ("real", "synthetic"))
    n = int(re.search(r"n=(\d+), (\d+) skipped", proc.stdout).group(1))
    skipped = int(re.search(r"n=(\d+), (\d+) skipped", proc.stdout).group(2))
    assert n + skipped == expected and n > 0
    for s in sets:
        assert s.name in proc.stdout
