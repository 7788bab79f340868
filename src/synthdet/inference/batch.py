"""Score many images into a Parquet dataset, on this machine or on a Ray cluster.

Both engines list the inputs the same way (:func:`list_inputs`) and score them through
:meth:`Detector.score_items`, so they write the same rows: ``local`` streams them
through this machine's DataLoader workers into one Parquet file; ``ray`` hands the list
to Ray Data, where actors that each hold one copy of the model read, decode and score a
batch at a time, and Ray's write tasks store the results. Either way OUT is a folder of
Parquet files that ``pandas.read_parquet(OUT)`` or ``pyarrow.parquet.read_table(OUT)``
reads as one table; an input that cannot be read is a row with an ``error``.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import importlib
import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import fsspec
import torch

from synthdet.data.labels import CLASS_NAMES, parse_label
from synthdet.data.shards import INDEX_NAME, Shard, ShardError, locate, member_ref, read_index, scan_shard
from synthdet.data.sources import IgnoredFiles, iter_image_files, label_from_folders
from synthdet.data.storage import is_url, join, open_binary, open_output, parent
from synthdet.inference.detector import Detector, PredictOptions, model_path
from synthdet.inference.inputs import expand_inputs
from synthdet.rundir import prepare_folder
from synthdet.weights import sha256_of

#: Output columns, in order. ``label`` is the known label (from class folders, a manifest
#: or shards), ``predicted`` the detector's pixel verdict; ``verdict`` and ``basis`` combine it
#: with what a local file declares (``declared``; every piece of evidence as JSON in ``provenance``).
COLUMNS = ("input", "label", "prob_synthetic", "predicted", "uncertain", "verdict", "basis", "declared",
           "provenance", "error", "model_sha256")
LOCAL_PART = "part-00000.parquet"


class ScoreError(ValueError):
    """A scoring job that cannot start (missing package, output already there); says how to fix it."""


@dataclass(frozen=True)
class ScoreInput:
    input: str  # absolute local path, URL, or SHARD.tar#MEMBER
    label: str | None = None  # "real" / "synthetic" where the layout says so
    error: str | None = None  # set when the input names nothing that can be scored


def list_inputs(specs: Sequence[str], ignored: IgnoredFiles | None = None) -> list[ScoreInput]:
    """Every image the inputs name, labelled where their layout says how.

    An input is an image file, a folder (class subfolders give labels), a glob pattern,
    a CSV manifest (``path`` or ``file``, optional ``label``), tar shards (a ``.tar``, a
    brace pattern, an ``index.json`` or a folder holding one), each local or a URL. An
    input that names nothing becomes one row with an error, and files a folder scan passes
    over are counted in ``ignored``, as in ``synthdet predict``.
    """
    ignored = ignored if ignored is not None else IgnoredFiles()
    found: list[ScoreInput] = []
    for spec in map(str, specs):
        if spec.endswith(".csv"):
            found.extend(_manifest_inputs(spec))
        elif spec.endswith((".tar", ".json")) or _holds_index(spec):
            found.extend(_shard_inputs(spec))
        elif is_url(spec):
            found.extend(_url_inputs(spec, ignored))
        else:
            found.extend(_local_inputs(spec, ignored))
    return found


def _local_inputs(spec: str, ignored: IgnoredFiles) -> list[ScoreInput]:
    files, problems = expand_inputs([spec], ignored)
    folder = Path(spec) if Path(spec).is_dir() else None
    return [ScoreInput(os.path.abspath(f), _folder_label(Path(f).relative_to(folder)) if folder else None)
            for f in files] + [ScoreInput(os.path.abspath(item), error=problem) for item, problem in problems]


def _url_inputs(spec: str, ignored: IgnoredFiles) -> list[ScoreInput]:
    fs, path = fsspec.core.url_to_fs(spec)
    if glob.has_magic(path):
        files = sorted(p for p in fs.glob(path) if fs.isfile(p))
        found = [ScoreInput(fs.unstrip_protocol(p)) for p in files]
        return found or [ScoreInput(spec, error="pattern matches no files")]
    if fs.isfile(path):
        return [ScoreInput(spec)]
    if not fs.isdir(path):
        return [ScoreInput(spec, error="no such file or folder")]
    files = iter_image_files(path, ignored, walk=fs.walk)  # the same files a local folder would give
    return ([ScoreInput(fs.unstrip_protocol(str(p)), _folder_label(p.relative_to(path))) for p in files]
            or [ScoreInput(spec, error="folder contains no images")])


def _manifest_inputs(spec: str) -> list[ScoreInput]:
    try:
        with open_binary(spec) as fh:
            rows = list(csv.DictReader(io.TextIOWrapper(fh, encoding="utf-8", newline="")))
    except FileNotFoundError:
        return [ScoreInput(spec, error="no such file or folder")]
    base = parent(spec if is_url(spec) else os.path.abspath(spec))
    inputs = []
    for line_no, row in enumerate(rows, start=2):
        path = row.get("path") or row.get("file")
        if not path:
            raise ScoreError(f"{spec}:{line_no}: a manifest needs a 'path' (or 'file') column")
        try:
            label = CLASS_NAMES[parse_label(row["label"])] if row.get("label") else None
        except ValueError as exc:
            raise ScoreError(f"{spec}:{line_no}: {exc}") from None
        inputs.append(ScoreInput(join(base, path), label))
    return inputs


def _shard_inputs(spec: str) -> list[ScoreInput]:
    """The image members of shards, labelled from their index; without an index, from the tar itself."""
    if not is_url(spec):
        spec = os.path.abspath(spec)
    location, selected = locate(spec)
    try:
        shards = read_index(location)[1]
    except ShardError:
        if selected is None:
            raise
        shards = [Shard(url, scan_shard(url, "")) for url in selected]
    wanted = None if selected is None else set(selected)
    return [ScoreInput(member_ref(s.url, sample.member), None if sample.label is None else CLASS_NAMES[sample.label])
            for s in shards if wanted is None or s.url in wanted for sample in s.samples]


def _holds_index(spec: str) -> bool:
    if is_url(spec):
        fs, path = fsspec.core.url_to_fs(spec)
        return fs.isfile(f"{path.rstrip('/')}/{INDEX_NAME}")
    return (Path(spec) / INDEX_NAME).is_file()


def _folder_label(relative: Path) -> str | None:
    label = label_from_folders(relative)
    return None if label is None else CLASS_NAMES[label]


def score_rows(detector: Detector, inputs: Sequence[ScoreInput], options: PredictOptions,
               sha256: str, progress: bool = False) -> Iterator[dict]:
    """One output row per input: those that named nothing first, then the scored ones in order."""
    for item in inputs:
        if item.error is not None:
            yield {**asdict(item), "prob_synthetic": None, "predicted": None, "uncertain": None,
                   "model_sha256": sha256}
    good = [item for item in inputs if item.error is None]
    for item, p in zip(good, detector.score_items([i.input for i in good], options, progress)):
        yield {"input": item.input, "label": item.label, "prob_synthetic": p.prob_synthetic, "predicted": p.label,
               "uncertain": p.uncertain, "verdict": p.verdict, "basis": p.basis,
               "declared": (p.provenance or {}).get("declared"),
               "provenance": json.dumps(p.provenance["evidence"]) if p.provenance else None,
               "error": p.error, "model_sha256": sha256}


def arrow_schema():
    pa = require("pyarrow")
    types = {"prob_synthetic": pa.float64(), "uncertain": pa.bool_()}
    return pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])


def rows_table(rows: list[dict]):
    return require("pyarrow").Table.from_pylist(rows, schema=arrow_schema())


def check_output(out: str) -> str:
    """``out`` as an absolute path (or URL), refused if something is already there.

    A local folder is created and proven writable here, before the model loads or an image is read.
    """
    out = out if is_url(out) else os.path.abspath(out)
    fs, path = fsspec.core.url_to_fs(out)
    if fs.exists(path) and (not fs.isdir(path) or fs.ls(path)):
        raise ScoreError(f"{out}: already exists; choose a new --out (results are never overwritten)")
    if is_url(out):
        fs.makedirs(path, exist_ok=True)
    else:
        prepare_folder(out)
    return out


def score_local(model: str | os.PathLike | None, inputs: Sequence[ScoreInput], out: str, options: PredictOptions,
                device: str = "auto", progress: bool = False, chunk: int = 1024) -> None:
    """Score on this machine, writing ``OUT/part-00000.parquet`` in row groups of ``chunk`` rows as results come.

    A local file is written atomically: an interrupted job leaves no partial table.
    """
    pq = require("pyarrow.parquet")
    out = check_output(out)
    detector, sha256 = Detector.load(model, device), sha256_of(model_path(model))
    with open_output(join(out, LOCAL_PART)) as fh, pq.ParquetWriter(fh, arrow_schema()) as writer:
        rows = []
        for row in score_rows(detector, inputs, options, sha256, progress):
            rows.append(row)
            if len(rows) == chunk:
                writer.write_table(rows_table(rows))
                rows = []
        writer.write_table(rows_table(rows))


def score_ray(model: str | os.PathLike | None, inputs: Sequence[ScoreInput], out: str, options: PredictOptions,
              actors: int | None = None, cpus_per_actor: float = 1.0, gpus_per_actor: float = 0.0,
              address: str | None = None) -> None:
    """Score on Ray: ``map_batches`` over a pool of actors, one model each, and Ray's Parquet writer.

    Joins the Ray instance already running in this process, else ``address`` (or
    $RAY_ADDRESS, as ``ray job submit`` sets it), else starts one on this machine. The
    checkpoint travels to the actors through Ray's object store, so no node needs the file.
    """
    ray = require("ray")
    out = check_output(out)
    path = model_path(model)
    checkpoint = path.read_bytes()
    if not ray.is_initialized():
        ray.init(address=address)
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("GPU" if gpus_per_actor else "CPU", 1)
                            // (gpus_per_actor or cpus_per_actor)))
    dataset = ray.data.from_items([asdict(item) for item in inputs])
    scored = dataset.map_batches(
        RayScorer, batch_size=options.batch_size, batch_format="pyarrow",
        fn_constructor_kwargs={"checkpoint": ray.put(checkpoint), "suffix": path.suffix,
                               "sha256": hashlib.sha256(checkpoint).hexdigest(), "options": options,
                               "device": "cuda" if gpus_per_actor else "cpu", "threads": max(1, int(cpus_per_actor))},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)
    scored.write_parquet(out)


class RayScorer:
    """A Ray actor's model, loaded once from the checkpoint's bytes; each call scores one batch of inputs.

    Decoding happens here, in the actor, one image after another (``workers=0``): Ray's
    parallelism is the actor pool, and on a GPU more actors per GPU (``num_gpus`` 0.25)
    give decoding more CPU.
    """

    def __init__(self, checkpoint, suffix: str, sha256: str, options: PredictOptions, device: str, threads: int):
        """``checkpoint``: an object-store reference to the file's bytes (one copy per node, not per actor).

        Ray Data passes constructor arguments as given, so the reference is resolved here.
        """
        import ray

        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"model{suffix}"
            path.write_bytes(ray.get(checkpoint))
            self.detector = Detector.load(path, device)
        self.sha256 = sha256
        self.options = PredictOptions(**{**asdict(options), "workers": 0})

    def __call__(self, batch):
        inputs = [ScoreInput(**row) for row in batch.to_pylist()]
        return rows_table(list(score_rows(self.detector, inputs, self.options, self.sha256)))


def read_results(out: str):
    """The scores written to ``out`` as one pyarrow table (both engines' layouts)."""
    pq = require("pyarrow.parquet")
    fs, path = fsspec.core.url_to_fs(out)
    return pq.read_table(path, filesystem=fs)


def require(module: str):
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ScoreError(f"synthdet score needs {module.split('.')[0]}: pip install 'synthdet[ray]'") from None

