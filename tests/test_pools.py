"""The project's own training sources (pools/*.csv) keep the data rules: pinned, checked, and
never holding a file of, or a repository behind, the sets that measure generalization."""

import csv
import re
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from synthdet.data.pull import read_pool_manifest

POOLS = sorted((Path(__file__).resolve().parents[1] / "pools").glob("*.csv"))
POOL_COLUMNS = ["source", "label", "generator", "repo", "commit", "path", "sha1", "bytes", "format", "width", "height"]


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("manifest", POOLS, ids=lambda p: p.name)
def test_a_project_pool_follows_the_data_rules(manifest):
    listed = rows(manifest)
    assert list(listed[0])[: len(POOL_COLUMNS)] == POOL_COLUMNS
    assert len(read_pool_manifest(manifest)) == len(listed)  # what `synthdet data pull` accepts
    assert all(re.fullmatch(r"[0-9a-f]{40}", r["commit"]) and re.fullmatch(r"[0-9a-f]{40}", r["sha1"]) for r in listed)
    sha1s = [r["sha1"] for r in listed]
    assert len(set(sha1s)) == len(sha1s)
    measured = {r["sha1"] for m in SHARED_DATA.glob("*/manifest.csv") for r in rows(m)}
    assert not set(sha1s) & measured  # no file of a set that measures generalization
    sources = " ".join(p.read_text(errors="replace") for p in SHARED_DATA.glob("*/SOURCE.txt")).lower()
    repos = {r["repo"].lower() for r in listed}
    assert not {repo for repo in repos if repo in sources or repo == "ml72/ai-image-classifier-playground"}
    shared_pool = {r["sha1"] for r in rows(SHARED_DATA.parent / "pool" / "manifest.csv")}
    assert not set(sha1s) & shared_pool  # nothing the shared pool already lists


def test_the_real_photo_pool_is_as_documented():
    listed = rows(Path(__file__).resolve().parents[1] / "pools" / "real-photos.csv")
    assert {r["label"] for r in listed} == {"real"} and len(listed) >= 3000
    assert len({r["repo"] for r in listed}) >= 5
    assert sum(r["format"] == "PNG" for r in listed) >= 900  # photos stored as PNG: format is no label


def test_no_file_is_in_two_project_pools():
    seen: dict[str, str] = {}
    for manifest in POOLS:
        for r in rows(manifest):
            assert seen.setdefault(r["sha1"], manifest.name) == manifest.name, f"{r['path']} is in two pools"
