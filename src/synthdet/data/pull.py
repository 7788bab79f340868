"""Materialize a pool of public images listed in a manifest from git repositories.

A pool manifest names every image by repository, commit and path, with the sha1 of its
bytes: the images stay in their repositories (their licences do not allow copying them into
this project). :func:`pull_pool` reads them from local bare copies or fetches each repository
at its commit, checks every sha1, writes ``OUT/<source>/<label>/<file name>`` and an
``OUT/manifest.csv`` that ``synthdet train --data`` reads, and names every row it could not
deliver in ``OUT/pull_report.csv``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from tqdm.auto import tqdm

from synthdet.data.labels import CLASS_NAMES, parse_label
from synthdet.data.sources import SourceError

#: Columns a pool manifest must have; ``generator``, ``group`` and ``bytes`` are optional,
#: and any other column is carried over into OUT/manifest.csv.
REQUIRED_COLUMNS = ("source", "label", "repo", "commit", "path", "sha1")
#: OUT/manifest.csv: synthdet's manifest columns, then where each file came from.
MANIFEST_COLUMNS = ("path", "label", "source", "group", "generator", "repo", "commit", "sha1", "repo_path")
REPORT_COLUMNS = ("path", "repo", "commit", "status", "detail", "file")
#: Row outcomes; the first two mean the file is in place.
WRITTEN, PRESENT, MISSING, MISMATCH = "written", "present", "missing", "sha1-mismatch"
#: Where ``git_base`` fetches are kept, inside OUT, laid out like a mirror folder.
CACHE_DIR = ".git-cache"

_CHUNK = 1 << 20
_HEX40 = re.compile(r"[0-9a-f]{40}")
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class PoolFile:
    """One manifest row: where the file is, what it must hash to and where it goes."""

    index: int  # row number among the data rows, from 0
    repo: str  # owner/name
    commit: str
    path: str  # inside the repository
    sha1: str
    size: int | None  # the manifest's ``bytes``, when it has that column
    label: str  # canonical class name
    source: str
    row: dict  # the whole manifest row, for the columns carried over

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


@dataclass(frozen=True)
class Outcome:
    status: str  # WRITTEN, PRESENT, MISSING or MISMATCH
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (WRITTEN, PRESENT)


@dataclass
class PullResult:
    files: list[PoolFile]
    targets: list[str]  # output path of each file, relative to OUT
    outcomes: list[Outcome]
    manifest: Path  # OUT/manifest.csv
    report: Path  # OUT/pull_report.csv
    seconds: float

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def counts(self) -> dict[str, Counter]:
        """Outcomes per source, sources in manifest order."""
        table: dict[str, Counter] = {}
        for file, outcome in zip(self.files, self.outcomes):
            table.setdefault(file.source, Counter())[outcome.status] += 1
        return table

    def problems(self) -> list[tuple[PoolFile, Outcome]]:
        return [(f, o) for f, o in zip(self.files, self.outcomes) if not o.ok]


class _Unavailable(Exception):
    """A repository (or its git process) that cannot deliver files; every row it owns is missing."""


class _Stopped(Exception):
    """Ends a worker thread once the pull has failed or been interrupted elsewhere."""


def pull_pool(
    manifest: str | Path | Sequence[str | Path],
    out: str | Path,
    mirror: str | Path | None = None,
    git_base: str | None = None,
    jobs: int = 4,
    progress: bool = False,
) -> PullResult:
    """Write every file of ``manifest`` (one manifest or several: the pool's and the project's own
    sources) under ``out``, checked against its sha1.

    Files come from ``mirror``, a folder of bare git copies (``<owner>+<name>/repo``,
    ``<owner>+<name>`` or ``<owner>/<name>.git``), or are fetched from
    ``git_base/<owner>/<name>[.git]`` into ``out/.git-cache``. A file already in place with
    the right sha1 is left alone, so an interrupted pull resumes. Up to ``jobs``
    repositories are read at once. Raises :class:`SourceError` for a bad manifest; rows
    that fail are reported in the result and in OUT/pull_report.csv, not raised.
    """
    if (mirror is None) == (git_base is None):
        raise ValueError("give exactly one of mirror (a folder of bare git copies) or git_base (a URL)")
    started = time.perf_counter()
    manifests = [Path(manifest)] if isinstance(manifest, (str, os.PathLike)) else [Path(m) for m in manifest]
    out = Path(out)
    files = [dataclasses.replace(file, index=index)
             for index, file in enumerate(f for m in manifests for f in read_pool_manifest(m))]
    if shutil.which("git") is None:
        raise FileNotFoundError("git is not on PATH; pulling a pool reads git repositories")
    if mirror is not None and not Path(mirror).is_dir():
        raise SourceError(f"{mirror}: mirror folder not found")
    if git_base is not None:
        locate = _Fetcher(git_base.rstrip("/"), out / CACHE_DIR).git_dir
    else:
        locate = _Mirror(Path(mirror)).git_dir
    for manifest in manifests:
        if (out / "manifest.csv").resolve() == manifest.resolve():
            raise SourceError(f"{manifest}: pulling into {out} would overwrite this manifest; choose another folder")
    targets = assign_targets(files)
    out.mkdir(parents=True, exist_ok=True)

    outcomes: list[Outcome | None] = [None] * len(files)
    by_repo: dict[str, list[PoolFile]] = defaultdict(list)
    for file in files:
        by_repo[file.repo].append(file)
    lock, stop = threading.Lock(), threading.Event()
    with tqdm(total=len(files), desc="pull", unit="file", disable=not progress) as bar:

        def record(file: PoolFile, outcome: Outcome) -> None:
            if stop.is_set():  # interrupted: every thread ends after the file it has in hand
                raise _Stopped
            outcomes[file.index] = outcome
            with lock:
                bar.update()

        # Largest repositories first, so the last one running is a small one.
        order = sorted(by_repo.items(), key=lambda item: -len(item[1]))
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = [pool.submit(_pull_repository, repo, members, locate, out, targets, record)
                       for repo, members in order]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                stop.set()
                for future in futures:
                    future.cancel()
                raise

    _write_csv(out / "manifest.csv", list(MANIFEST_COLUMNS) + _carried_columns(files),
               (_manifest_row(f, targets[f.index]) for f, o in zip(files, outcomes) if o.ok))
    _write_csv(out / "pull_report.csv", REPORT_COLUMNS, (
        {"path": f.path, "repo": f.repo, "commit": f.commit, "status": o.status, "detail": o.detail,
         "file": targets[f.index] if o.ok else ""} for f, o in zip(files, outcomes)))
    return PullResult(files, targets, outcomes, out / "manifest.csv", out / "pull_report.csv",
                      time.perf_counter() - started)


def read_pool_manifest(path: Path) -> list[PoolFile]:
    """The rows of a pool manifest, validated; raises :class:`SourceError` naming the file and the problem."""
    if not path.is_file():
        raise SourceError(f"{path}: manifest not found")
    with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets start with a BOM
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise SourceError(
                f"{path}: missing column(s) {', '.join(missing)}; a pool manifest needs "
                f"{', '.join(REQUIRED_COLUMNS)} (generator, group, bytes and others are optional)"
            )
        files = []
        for line_no, row in enumerate(reader, start=2):
            try:
                files.append(_pool_file(len(files), row))
            except ValueError as exc:
                raise SourceError(f"{path}:{line_no}: {exc}") from None
    if not files:
        raise SourceError(f"{path}: manifest has no rows")
    return files


def _pool_file(index: int, row: dict) -> PoolFile:
    if None in row or None in row.values():
        raise ValueError("the number of fields differs from the header's")
    repo, commit, path = row["repo"].strip(), row["commit"].strip().lower(), row["path"]
    sha1, source = row["sha1"].strip().lower(), row["source"].strip()
    if not _REPO.fullmatch(repo) or any(part in (".", "..") for part in repo.split("/")):
        raise ValueError(f"repo must be owner/name, got {repo!r}")
    if not _COMMIT.fullmatch(commit):
        raise ValueError(f"commit must be a full commit id, got {commit!r}")
    if not _HEX40.fullmatch(sha1):
        raise ValueError(f"sha1 must be 40 hex digits, got {sha1!r}")
    if "\n" in path or PurePosixPath(path).name in ("", ".", ".."):
        raise ValueError(f"path must name a file in the repository, got {path!r}")
    if source in ("", ".", "..") or any(c in source for c in "/\\\0"):
        raise ValueError(f"source must be a name usable as a folder, got {source!r}")
    size = None
    if (row.get("bytes") or "").strip():
        if not row["bytes"].strip().isdigit():
            raise ValueError(f"bytes must be a whole number, got {row['bytes']!r}")
        size = int(row["bytes"])
    label = CLASS_NAMES[parse_label(row["label"])]
    return PoolFile(index, repo, commit, path, sha1, size, label, source, row)


def assign_targets(files: list[PoolFile]) -> list[str]:
    """Output path of each file, relative to OUT: ``<source>/<label>/<file name>``.

    Files whose names clash in one folder all get the first 8 hex digits of their sha1 as a
    prefix (plus ``-N`` if even that clashes), and so do names starting with a dot, which
    would be hidden files (folder sources skip those). Clashes are found over the whole
    manifest and case-insensitively (macOS and Windows folders are), so a name never
    depends on which other rows were pulled or on the file system.
    """
    targets = [""] * len(files)
    folders: dict[tuple[str, str], list[PoolFile]] = defaultdict(list)
    for file in files:
        folders[(file.source, file.label)].append(file)
    for (source, label), members in folders.items():
        uses = Counter(f.name.casefold() for f in members)
        plain = [f for f in members if uses[f.name.casefold()] == 1 and not f.name.startswith(".")]
        taken = {f.name.casefold() for f in plain}
        for file in plain:
            targets[file.index] = f"{source}/{label}/{file.name}"
        prefixed = sorted((f for f in members if not targets[f.index]),
                          key=lambda f: (f.name, f.sha1, f.repo, f.commit, f.path))
        for file in prefixed:
            name, n = f"{file.sha1[:8]}_{file.name}", 1
            while name.casefold() in taken:
                name, n = f"{file.sha1[:8]}-{n}_{file.name}", n + 1
            taken.add(name.casefold())
            targets[file.index] = f"{source}/{label}/{name}"
    return targets


def _pull_repository(repo: str, files: list[PoolFile], locate: Callable[[str, list[str]], Path], out: Path,
                     targets: list[str], record: Callable[[PoolFile, Outcome], None]) -> None:
    """Pull the files of one repository through one ``git cat-file --batch`` process."""
    needed = []
    for file in files:
        if _has_file(out / targets[file.index], file.sha1, file.size):
            record(file, Outcome(PRESENT))
        else:
            needed.append(file)
    if not needed:
        return
    done: set[int] = set()

    def finish(file: PoolFile, outcome: Outcome) -> None:
        done.add(file.index)
        record(file, outcome)

    commits = list(dict.fromkeys(f.commit for f in needed))
    try:
        git_dir = locate(repo, commits)
        with _CatFile(git_dir) as cat:
            for commit in commits:
                rows = [f for f in needed if f.commit == commit]
                if not cat.has_commit(commit):
                    for file in rows:
                        finish(file, Outcome(MISSING, f"commit {commit} not in {git_dir}"))
                    continue
                for file in rows:
                    finish(file, _pull_file(cat, file, out / targets[file.index]))
    except _Unavailable as exc:
        for file in needed:
            if file.index not in done:
                finish(file, Outcome(MISSING, str(exc)))


def _pull_file(cat: "_CatFile", file: PoolFile, target: Path) -> Outcome:
    """Stream one file into place through a temporary name, so no half file ever has its name."""
    found = cat.lookup(f"{file.commit}:{file.path}")
    if found is None:
        return Outcome(MISSING, f"{file.path} not at commit {file.commit}")
    kind, size = found
    if kind != "blob":
        cat.skip(size)
        return Outcome(MISSING, f"{file.path} is a {kind}, not a file, at commit {file.commit}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    digest = hashlib.sha1()
    try:
        with partial.open("wb") as fh:
            for chunk in cat.read(size):
                digest.update(chunk)
                fh.write(chunk)
        if digest.hexdigest() != file.sha1:
            partial.unlink()
            return Outcome(MISMATCH, f"sha1 {digest.hexdigest()} ({size} bytes), manifest says {file.sha1}")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return Outcome(WRITTEN)


def _has_file(path: Path, sha1: str, size: int | None) -> bool:
    """Whether ``path`` already holds the right bytes: size first (when known), then the hash."""
    try:
        if size is not None and path.stat().st_size != size:
            return False
        digest = hashlib.sha1()
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        return False
    return digest.hexdigest() == sha1


class _CatFile:
    """One ``git cat-file --batch`` process: every object of a repository through one pipe.

    A process per file would cost milliseconds each; this way 10k files take seconds.
    Requests go one at a time (git flushes each answer), so neither side can block the other.
    """

    _KINDS = (b"blob", b"tree", b"commit", b"tag")

    def __init__(self, git_dir: Path):
        self.git_dir = git_dir
        self.proc = subprocess.Popen(["git", "--git-dir", str(git_dir), "cat-file", "--batch"], env=_git_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def __enter__(self) -> "_CatFile":
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is not None:
            self.proc.kill()
        try:
            self.proc.stdin.close()
        except OSError:  # git already gone
            pass
        self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()

    def lookup(self, name: str) -> tuple[str, int] | None:
        """Type and size of object ``name`` (``<commit>`` or ``<commit>:<path>``), None if there is none.

        The body of a found object must be consumed (:meth:`read` or :meth:`skip`) before the next lookup.
        """
        try:
            self.proc.stdin.write(name.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except OSError:
            self._fail()
        header = self.proc.stdout.readline()
        if not header.endswith(b"\n"):
            self._fail()
        parts = header.split()  # "<id> <type> <size>", or "<name> missing"
        if len(parts) == 3 and parts[1] in self._KINDS and parts[2].isdigit():
            return parts[1].decode(), int(parts[2])
        return None

    def read(self, size: int):
        """The body of the object just looked up, in chunks (never all of it in memory)."""
        left = size
        while left:
            chunk = self.proc.stdout.read(min(left, _CHUNK))
            if not chunk:
                self._fail()
            left -= len(chunk)
            yield chunk
        if self.proc.stdout.read(1) != b"\n":
            self._fail()

    def skip(self, size: int) -> None:
        for _ in self.read(size):
            pass

    def has_commit(self, commit: str) -> bool:
        found = self.lookup(commit)
        if found is not None:
            self.skip(found[1])
        return found is not None and found[0] == "commit"

    def _fail(self):
        self.proc.kill()
        self.proc.wait()
        lines = self.proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        raise _Unavailable(f"git cat-file stopped in {self.git_dir}" + (f": {lines[-1]}" if lines else ""))


class _Mirror:
    """Bare git copies in one folder, one per repository, in any of three layouts."""

    def __init__(self, root: Path):
        self.root = root

    def candidates(self, repo: str) -> list[Path]:
        owner, name = repo.split("/")
        flat = self.root / f"{owner}+{name}"
        return [flat / "repo", flat, self.root / owner / f"{name}.git"]

    def git_dir(self, repo: str, commits: list[str]) -> Path:
        for candidate in self.candidates(repo):
            if _is_git_dir(candidate):
                return candidate
        looked = ", ".join(str(c.relative_to(self.root)) for c in self.candidates(repo))
        raise _Unavailable(f"no bare git copy of {repo} in {self.root} (looked for {looked})")


class _Fetcher:
    """Bare clones under OUT/.git-cache (the mirror layout ``<owner>+<name>``), fetched only as deep as needed."""

    def __init__(self, base: str, cache: Path):
        self.base, self.cache = base, cache

    def git_dir(self, repo: str, commits: list[str]) -> Path:
        owner, name = repo.split("/")
        git_dir = self.cache / f"{owner}+{name}"
        if not _is_git_dir(git_dir):
            git_dir.mkdir(parents=True, exist_ok=True)
            _git(git_dir, "init", "--bare", "--quiet")
        wanted = [c for c in commits if _git(git_dir, "cat-file", "-e", f"{c}^{{commit}}").returncode != 0]
        if not wanted:
            return git_dir
        error = ""
        for url in (f"{self.base}/{repo}.git", f"{self.base}/{repo}"):
            # Just the commits (no history) is cheapest, but a server may refuse commits by id
            # (uploadpack.allowReachableSHA1InWant off); then take every branch and tag with
            # their history, which needs --unshallow if the refused fetch got the tip alone.
            fetched = _git(git_dir, "fetch", "--quiet", "--depth", "1", url, *wanted)
            if fetched.returncode != 0:
                unshallow = ["--unshallow"] if (git_dir / "shallow").exists() else []
                fetched = _git(git_dir, "fetch", "--quiet", *unshallow, url,
                               "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
            if fetched.returncode == 0:
                return git_dir
            lines = fetched.stderr.strip().splitlines()
            error = next((l for l in lines if l.startswith(("fatal:", "error:"))), lines[-1] if lines else "failed")
        raise _Unavailable(f"could not fetch {repo} from {self.base}: {error}")


def _is_git_dir(path: Path) -> bool:
    return (path / "objects").is_dir() and (path / "HEAD").is_file()


def _git(git_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, env=_git_env())


def _git_env() -> dict[str, str]:
    # Never wait for a password on a terminal: an unknown repository must fail, not hang.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0"}


def _carried_columns(files: list[PoolFile]) -> list[str]:
    return [c for c in files[0].row if c not in MANIFEST_COLUMNS]


def _manifest_row(file: PoolFile, target: str) -> dict:
    """A row of OUT/manifest.csv. The group is the file's place in its repository, so a file
    keeps its split wherever OUT is and whatever name clashes renamed it."""
    return {
        "path": target, "label": file.label, "source": file.source,
        "group": file.row.get("group") or f"{file.repo}/{file.path}",
        "generator": file.row.get("generator", ""), "repo": file.repo, "commit": file.commit,
        "sha1": file.sha1, "repo_path": file.path,
        **{c: v for c, v in file.row.items() if c not in MANIFEST_COLUMNS},
    }


def _write_csv(path: Path, columns, rows) -> None:
    partial = path.with_name(f".{path.name}.part")
    with partial.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)
