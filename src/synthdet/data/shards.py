"""WebDataset tar shards: images stored as tar members, read in order or one by one.

A sample is a run of consecutive members sharing a key (the file name up to its first
dot): ``000000042.jpg`` holds the image file's bytes unchanged (re-encoding would alter
the very traces a detector learns) and ``000000042.json`` its ``label``, ``source``,
``group`` and ``split``; shards made by other tools may give the label as ``.cls``
(``0``/``real``, ``1``/``synthetic``) instead.

The shard index, ``index.json`` beside the shards, is the ``wids`` index of the
WebDataset project (``shardlist`` of ``url`` and ``nsamples``) with synthdet's columns
added: every sample's image member, label, source, group and split, and counts per shard.
A run reads it, not the tars, to know its splits and class counts. Training streams
shards from start to end (:class:`synthdet.data.loader.ShardStream`); a single image is
read through its reference ``SHARD.tar#MEMBER`` (validation, tests, predictions) by
seeking to it.

Plain :mod:`tarfile` reads and writes the format; the ``webdataset`` package would add a
pipeline layer without the member offsets that reading one image needs.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterator

from synthdet.data.labels import CLASS_NAMES, parse_label
from synthdet.data.storage import expand_braces, join, open_binary, open_output, parent, read_bytes

INDEX_NAME = "index.json"
INDEX_KIND = "wids-shard-index-v1"
#: Members that describe a sample; any other member of the sample is its image.
METADATA_EXTENSIONS = frozenset({"json", "cls", "txt"})


class ShardError(ValueError):
    """A shard or shard index that cannot be used; the message names the file."""


@dataclass(frozen=True)
class ShardSample:
    member: str  # the image member, e.g. 000000042.jpg
    label: int | None  # index into CLASS_NAMES; None when the shard does not say
    source: str
    group: str  # samples sharing a group share a split
    split: str | None  # train | val | test; None until an index assigns it


@dataclass
class Shard:
    url: str  # absolute local path or URL
    samples: list[ShardSample]

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per source and label: what class balancing needs, without opening the tar."""
        table: dict[str, dict[str, int]] = {}
        for (source, label), n in sorted(Counter((s.source, _label_name(s.label)) for s in self.samples).items()):
            table.setdefault(source, {})[label] = n
        return table


def member_ref(shard_url: str, member: str) -> str:
    """How one image inside a shard is named in splits, predictions and skipped files."""
    return f"{shard_url}#{member}"


def parse_member_ref(text: str) -> tuple[str, str] | None:
    """(shard, member) of ``SHARD.tar#MEMBER``, or None for anything else."""
    match = re.fullmatch(r"(.+?\.tar)#(.+)", str(text))
    return (match.group(1), match.group(2)) if match else None


def read_member(ref: str) -> bytes:
    """The bytes of one shard member, by seeking to it (the shard's member table is cached)."""
    shard, member = parse_member_ref(ref)
    try:
        offset, size = _member_table(shard)[member]
    except KeyError:
        raise ShardError(f"{shard}: has no member {member!r}") from None
    with open_binary(shard) as fh:
        fh.seek(offset)
        return fh.read(size)


def read_image_bytes(location: str) -> bytes:
    """An image file's bytes wherever it is: a shard member, a URL, or a local file."""
    return read_member(location) if parse_member_ref(location) else read_bytes(location)


@lru_cache(maxsize=16)
def _member_table(shard: str) -> dict[str, tuple[int, int]]:
    """Member name -> (data offset, size), from the tar headers (one pass, then cached per process)."""
    with open_binary(shard) as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def iter_members(shard: str, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None]]:
    """Every file member in order, with its bytes where ``wanted(name)``; reads the shard once, never seeking."""
    with open_binary(shard) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                yield member.name, tar.extractfile(member).read() if wanted(member.name) else None


def scan_shard(shard: str, default_source: str) -> list[ShardSample]:
    """The samples of a shard from its members: image member, and label etc. from .json or .cls.

    Splits stay None where the metadata names none; the index assigns them.
    """
    samples = []
    for key, members in _samples(shard):
        images = [name for ext, (name, _) in members.items() if ext not in METADATA_EXTENSIONS]
        if not images:
            continue
        try:
            meta = json.loads(members["json"][1]) if "json" in members else {}
        except json.JSONDecodeError as exc:
            raise ShardError(f"{shard}: sample {key!r}: its .json is not valid JSON ({exc})") from None
        label = meta.get("label", members["cls"][1].decode().strip() if "cls" in members else None)
        try:
            label = None if label is None else parse_label(label)
        except ValueError as exc:
            raise ShardError(f"{shard}: sample {key!r}: {exc}") from None
        source = meta.get("source") or default_source
        split = meta.get("split") if meta.get("split") in ("train", "val", "test") else None
        samples.append(ShardSample(images[0], label, source, meta.get("group") or f"{source}/{key}", split))
    return samples


def _samples(shard: str) -> Iterator[tuple[str, dict]]:
    """(key, {extension: (name, bytes or None)}) per sample; only metadata members come with their bytes."""
    key, members = None, {}
    for name, data in iter_members(shard, lambda n: _extension(n) in METADATA_EXTENSIONS):
        folder, _, base = name.rpartition("/")
        this_key = f"{folder}/{base.split('.', 1)[0]}" if folder else base.split(".", 1)[0]
        if this_key != key and members:
            yield key, members
            members = {}
        key = this_key
        members[_extension(name)] = (name, data)
    if members:
        yield key, members


def _extension(name: str) -> str:
    base = name.rpartition("/")[2]
    return base.split(".", 1)[1].lower() if "." in base else ""


def write_index(shards: list[Shard], location: str, name: str) -> None:
    """Write the index of ``shards`` to ``location`` (shard URLs relative to it where they sit beside it)."""
    folder = parent(location)
    entries = []
    for shard in shards:
        url = shard.url[len(folder) + 1:] if shard.url.startswith(folder + "/") else shard.url
        columns = {"member": [], "label": [], "source": [], "group": [], "split": []}
        for s in shard.samples:
            for column, value in zip(columns, (s.member, _label_name(s.label), s.source, s.group, s.split)):
                columns[column].append(value)
        entries.append({"url": url, "nsamples": len(shard.samples), "counts": shard.counts(), "samples": columns})
    index = {"__kind__": INDEX_KIND, "wids_version": 1, "name": name, "shardlist": entries}
    with open_output(location) as fh:
        fh.write(json.dumps(index).encode())


def read_index(location: str) -> tuple[str, list[Shard]]:
    """(name, shards) of a shard index."""
    try:
        with open_binary(location) as fh:
            index = json.loads(fh.read())
    except FileNotFoundError:
        raise ShardError(f"{location}: no shard index here; write shards with `synthdet data shard`, "
                         f"or index existing ones with `synthdet data index`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ShardError(f"{location}: cannot read the shard index ({exc})") from None
    if not isinstance(index, dict) or index.get("__kind__") != INDEX_KIND:
        raise ShardError(f"{location}: not a shard index (expected __kind__ {INDEX_KIND!r})")
    shards = []
    for entry in index.get("shardlist", []):
        columns = entry.get("samples")
        if columns is None:
            raise ShardError(f"{location}: shard {entry.get('url')!r} has no sample list; "
                             f"index it with `synthdet data index`")
        samples = [ShardSample(m, None if lab is None else parse_label(lab), src, grp, spl)
                   for m, lab, src, grp, spl in zip(*(columns[c] for c in ("member", "label", "source", "group",
                                                                             "split")))]
        shards.append(Shard(join(parent(location), entry["url"]), samples))
    return index.get("name") or parent(location).rsplit("/", 1)[-1], shards


def locate(spec: str) -> tuple[str, list[str] | None]:
    """(index location, the shards ``spec`` selects or None for all) of a shard source.

    ``spec`` is an index file, a folder holding ``index.json``, or a shard file or brace
    pattern of shards (``pool-{000000..000015}.tar``) whose index sits beside them.
    """
    spec = str(spec)
    if spec.endswith(".json"):
        return spec, None
    if spec.endswith(".tar"):
        urls = expand_braces(spec)
        folders = {parent(u) for u in urls}
        if len(folders) > 1:
            raise ShardError(f"{spec}: the shards of one source must sit in one folder beside their index")
        return join(folders.pop(), INDEX_NAME), urls
    return join(spec, INDEX_NAME), None


def load_shards(spec: str) -> tuple[str, list[Shard]]:
    """(name, shards) of a shard source (see :func:`locate`); every selected shard must be indexed."""
    location, selected = locate(spec)
    name, shards = read_index(location)
    if selected is None:
        return name, shards
    by_url = {s.url: s for s in shards}
    missing = [u for u in selected if u not in by_url]
    if missing:
        raise ShardError(f"{location}: does not index {len(missing)} selected shard(s), e.g. {missing[0]}")
    return name, [by_url[u] for u in selected]


def _label_name(label: int | None) -> str | None:
    return None if label is None else CLASS_NAMES[label]
