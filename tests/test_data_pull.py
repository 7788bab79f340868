"""`synthdet data pull`: a pool manifest materialized from git repositories, every sha1 checked."""

import csv
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthdet.cli import main
from synthdet.config import SourceConfig, SplitFractions
from synthdet.data.pull import PoolFile, assign_targets, pull_pool
from synthdet.data.sources import collect_records

REPO = "acme/pics"
GIT = ["git", "-c", "user.name=synthdet test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main",
       "-c", "commit.gpgsign=false"]


def _image_bytes(fmt: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pics(tmp_path_factory):
    """A repository of two commits (a.png changes in the second), and a manifest of it.

    Returns (work tree, manifest rows, bytes each row must get)."""
    work = tmp_path_factory.mktemp("pics") / "work"
    work.mkdir()

    def git(*args):
        return subprocess.run([*GIT, "-C", str(work), *args], check=True, capture_output=True, text=True)

    git("init", "-q")
    first = {"camera/a.png": _image_bytes("PNG", 1), "camera/sub/b.jpg": _image_bytes("JPEG", 2)}
    second = {"camera/a.png": _image_bytes("PNG", 3), "gen/x/same.png": _image_bytes("PNG", 4),
              "gen/y/same.png": _image_bytes("PNG", 5)}
    commits = []
    for files in (first, second):
        for path, data in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_bytes(data)
        git("add", "-A")
        git("commit", "-q", "-m", f"{len(commits) + 1}")
        commits.append(git("rev-parse", "HEAD").stdout.strip())
    wanted = [  # (source, label, commit, path, bytes): a.png as of the first commit, not the tip
        ("camera", "real", commits[0], "camera/a.png", first["camera/a.png"]),
        ("camera", "real", commits[1], "camera/sub/b.jpg", first["camera/sub/b.jpg"]),
        ("gen", "synthetic", commits[1], "gen/x/same.png", second["gen/x/same.png"]),
        ("gen", "synthetic", commits[1], "gen/y/same.png", second["gen/y/same.png"]),
    ]
    rows = [{"source": s, "label": label, "generator": "pillow" if s == "gen" else "camera", "repo": REPO,
             "commit": c, "path": p, "sha1": hashlib.sha1(data).hexdigest(), "bytes": len(data), "format": p[-3:]}
            for s, label, c, p, data in wanted]
    return work, rows, [w[-1] for w in wanted]


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def bare_clone(work: Path, into: Path) -> Path:
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(into)], check=True, capture_output=True)
    return into


def pulled_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*")
            if p.is_file() and ".git-cache" not in p.parts and p.suffix != ".csv"}


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    """``synthdet ARGS`` in this process (a subprocess would spend seconds importing torch)."""
    monkeypatch.setattr(sys, "argv", ["synthdet", *map(str, args)])
    with pytest.raises(SystemExit) as exited:
        main()
    captured = capsys.readouterr()
    return exited.value.code, captured.out + captured.err


EXPECTED_FILES = ["camera/real/a.png", "camera/real/b.jpg"]  # + the two same.png, sha1-prefixed


def test_pull_from_mirror_writes_checked_files_and_a_manifest_training_reads(pics, tmp_path):
    work, rows, data = pics
    bare_clone(work, tmp_path / "mirror" / "acme+pics" / "repo")
    out = tmp_path / "pool"
    result = pull_pool(write_manifest(tmp_path / "m.csv", rows), out, mirror=tmp_path / "mirror")

    assert result.ok and [o.status for o in result.outcomes] == ["written"] * 4
    same = [f"gen/synthetic/{r['sha1'][:8]}_same.png" for r in rows[2:]]
    assert result.targets == EXPECTED_FILES + same
    assert pulled_files(out) == dict(zip(result.targets, data))
    assert not list(out.rglob(".*.part"))

    records = collect_records([SourceConfig(manifest=out / "manifest.csv")], SplitFractions())
    by_path = {Path(r.path).relative_to(out).as_posix(): r for r in records}
    assert {p: (r.source, r.label_name) for p, r in by_path.items()} == {
        **{p: ("camera", "real") for p in EXPECTED_FILES}, **{p: ("gen", "synthetic") for p in same}}
    assert by_path["camera/real/a.png"].group == "camera/acme/pics/camera/a.png"
    manifest = list(csv.DictReader((out / "manifest.csv").open()))
    assert list(manifest[0])[:9] == ["path", "label", "source", "group", "generator", "repo", "commit", "sha1",
                                     "repo_path"]
    assert [(m["repo_path"], m["generator"], m["format"]) for m in manifest] == [
        (r["path"], r["generator"], r["format"]) for r in rows]


def test_pull_reads_several_manifests_into_one_pool(pics, tmp_path, monkeypatch, capsys):
    """The shared pool's manifest and the project's own sources, pulled together (`data pull A B OUT`)."""
    work, rows, data = pics
    bare_clone(work, tmp_path / "mirror" / "acme+pics" / "repo")
    first, second = write_manifest(tmp_path / "a.csv", rows[:2]), write_manifest(tmp_path / "b.csv", rows[2:])
    code, text = run_cli(monkeypatch, capsys, "data", "pull", first, second, tmp_path / "pool",
                         "--mirror", tmp_path / "mirror")
    assert code == 0 and "4 of 4 files in place" in text
    manifest = list(csv.DictReader((tmp_path / "pool" / "manifest.csv").open()))
    assert [m["repo_path"] for m in manifest] == [r["path"] for r in rows]
    assert sorted(pulled_files(tmp_path / "pool").values()) == sorted(data)


def test_output_names_are_prefixed_only_where_they_would_clash_or_hide():
    def pool_file(index, source, path, sha1):
        return PoolFile(index, REPO, "c" * 40, path, sha1, None, "real", source, {})

    files = [pool_file(0, "s", "x/A.png", "a" * 40), pool_file(1, "s", "y/a.png", "b" * 40),
             pool_file(2, "t", "z/a.png", "c" * 40), pool_file(3, "s", ".hidden.png", "d" * 40),
             pool_file(4, "t", "1/same.png", "e" * 40), pool_file(5, "t", "2/same.png", "e" * 40),
             pool_file(6, "t", "eeeeeeee_same.png", "f" * 40)]
    assert assign_targets(files) == [
        "s/real/aaaaaaaa_A.png", "s/real/bbbbbbbb_a.png",  # A.png and a.png are one file on macOS
        "t/real/a.png", "s/real/dddddddd_.hidden.png",
        "t/real/eeeeeeee-1_same.png", "t/real/eeeeeeee-2_same.png",  # identical bytes, or a taken name
        "t/real/eeeeeeee_same.png",
    ]


@pytest.mark.parametrize("protocol", ["2", "0"])
def test_pull_from_git_base_fetches_each_commit(pics, tmp_path, monkeypatch, protocol):
    """Protocol 2 serves commits by id (a shallow fetch); protocol 0 refuses the older,
    unadvertised commit, which must fall back to fetching the branches."""
    work, rows, data = pics
    bare_clone(work, tmp_path / "server" / "acme" / "pics.git")
    for key, value in {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "protocol.version",
                       "GIT_CONFIG_VALUE_0": protocol}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "pool"
    result = pull_pool(write_manifest(tmp_path / "m.csv", rows), out, git_base=f"file://{tmp_path / 'server'}")

    assert result.ok, result.problems()
    assert pulled_files(out) == dict(zip(result.targets, data))
    shallow = subprocess.run(["git", "--git-dir", str(out / ".git-cache" / "acme+pics"), "rev-parse",
                              "--is-shallow-repository"], capture_output=True, text=True, check=True).stdout
    assert shallow.strip() == ("true" if protocol == "2" else "false")
    records = collect_records([SourceConfig(manifest=out / "manifest.csv")], SplitFractions())
    assert sorted((r.source, r.label_name) for r in records) == [("camera", "real")] * 2 + [("gen", "synthetic")] * 2

    unknown = pull_pool(write_manifest(tmp_path / "u.csv", [{**rows[0], "repo": "acme/elsewhere"}]), tmp_path / "u",
                        git_base=f"file://{tmp_path / 'server'}")
    assert unknown.outcomes[0].status == "missing"
    assert unknown.outcomes[0].detail.startswith(f"could not fetch acme/elsewhere from file://{tmp_path / 'server'}")


def test_tampered_and_missing_files_are_named_and_not_written(pics, tmp_path, monkeypatch, capsys):
    work, rows, _ = pics
    bare_clone(work, tmp_path / "mirror" / "acme" / "pics.git")  # the <owner>/<name>.git layout
    tampered = {**rows[1], "sha1": "0" * 40}
    gone = {**rows[0], "path": "camera/gone.png"}
    elsewhere = {**rows[0], "repo": "acme/elsewhere"}
    manifest = write_manifest(tmp_path / "m.csv", [rows[0], tampered, gone, elsewhere, *rows[2:]])
    out = tmp_path / "pool"

    code, output = run_cli(monkeypatch, capsys, "data", "pull", manifest, out, "--mirror", tmp_path / "mirror")

    assert code == 1
    assert f"sha1-mismatch: acme/pics:{rows[1]['path']}" in output
    assert "missing: acme/pics:camera/gone.png: camera/gone.png not at commit" in output
    assert "missing: acme/elsewhere:camera/a.png: no bare git copy of acme/elsewhere" in output
    assert not (out / "camera" / "real" / "b.jpg").exists() and not list(out.rglob(".*.part"))
    report = {(r["repo"], r["path"]): r["status"] for r in csv.DictReader((out / "pull_report.csv").open())}
    assert report[("acme/pics", rows[1]["path"])] == "sha1-mismatch"
    assert list(report.values()).count("written") == 3
    written = [r["repo_path"] for r in csv.DictReader((out / "manifest.csv").open())]
    assert written == [rows[0]["path"], rows[2]["path"], rows[3]["path"]]


def test_second_pull_writes_nothing_and_replaces_corrupt_files(pics, tmp_path, monkeypatch, capsys):
    work, rows, data = pics
    bare_clone(work, tmp_path / "mirror" / "acme+pics")  # the <owner>+<name> layout
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "pool"
    first = pull_pool(manifest, out, mirror=tmp_path / "mirror")
    files = [out / t for t in first.targets]
    stamps = [f.stat().st_mtime_ns for f in files]

    again = pull_pool(manifest, out, mirror=tmp_path / "mirror")
    assert [o.status for o in again.outcomes] == ["present"] * 4
    assert [f.stat().st_mtime_ns for f in files] == stamps

    files[0].write_bytes(data[0][: len(data[0]) // 2])  # cut short: the size tells
    files[2].write_bytes(bytes([data[2][0] ^ 1]) + data[2][1:])  # same size: only the hash tells
    code, output = run_cli(monkeypatch, capsys, "data", "pull", manifest, out, "--mirror", tmp_path / "mirror")
    assert code == 0, output
    statuses = [r["status"] for r in csv.DictReader((out / "pull_report.csv").open())]
    assert statuses == ["written", "present", "written", "present"]
    assert [f.read_bytes() for f in files] == data
    assert [f.stat().st_mtime_ns for f in files][1::2] == stamps[1::2]


def test_manifest_without_a_column_exits_2_naming_it(pics, tmp_path, monkeypatch, capsys):
    _, rows, _ = pics
    manifest = write_manifest(tmp_path / "m.csv", [{k: v for k, v in r.items() if k != "sha1"} for r in rows])
    code, output = run_cli(monkeypatch, capsys, "data", "pull", manifest, tmp_path / "pool",
                           "--mirror", tmp_path)
    assert code == 2
    assert f"{manifest}: missing column(s) sha1" in output
    assert not (tmp_path / "pool").exists()
