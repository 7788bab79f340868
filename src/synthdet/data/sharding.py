"""Write WebDataset shards from any source synthdet reads, and index shards other tools wrote.

Splits are fixed when shards are indexed: each sample keeps the split its source gave it
(hashed by group, or the manifest's or source's own), so every run on a shard set trains,
selects and tests on the same images, whatever its ``data.splits``.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from synthdet.config import SplitFractions
from synthdet.data.loader import SkipLog
from synthdet.data.shards import (
    INDEX_NAME,
    METADATA_EXTENSIONS,
    Shard,
    ShardSample,
    parse_member_ref,
    read_image_bytes,
    scan_shard,
    write_index,
)
from synthdet.data.sources import ImageRecord, split_for
from synthdet.rundir import atomic_path, prepare_folder


def write_shards(records: list[ImageRecord], out_dir: Path, per_shard: int = 1000, name: str = "shard",
                 seed: int = 0, progress: bool = False) -> tuple[list[Shard], SkipLog]:
    """Copy the images of ``records`` into ``OUT/NAME-000000.tar``, ... plus ``OUT/index.json``.

    Records are shuffled (seeded) first, so every shard mixes sources and classes and a
    stream of shards is already a fair sample. Image bytes are copied as they are; a file
    that cannot be read is left out and listed in the returned :class:`SkipLog`.
    """
    out_dir = prepare_folder(out_dir)
    order = list(records)
    random.Random(seed).shuffle(order)
    skipped, shards = SkipLog(), []
    bar = tqdm(total=len(order), desc="shards", unit="image", disable=not progress)
    key = 0
    for start in range(0, len(order), per_shard):
        path = out_dir / f"{name}-{len(shards):06d}.tar"
        samples = []
        with atomic_path(path) as partial, tarfile.open(partial, "w") as tar:
            for record in order[start:start + per_shard]:
                bar.update()
                try:
                    data = read_image_bytes(record.path)
                except (OSError, ValueError) as exc:
                    skipped.add(record.path, f"cannot read ({exc})", "shard")
                    continue
                member = f"{key:09d}{_suffix(record.path)}"
                meta = {"label": record.label_name, "source": record.source, "group": record.group,
                        "split": record.split, "file": record.path}
                _add(tar, member, data)
                _add(tar, f"{key:09d}.json", json.dumps(meta).encode())
                samples.append(ShardSample(member, record.label, record.source, record.group, record.split))
                key += 1
        shards.append(Shard(str(path.resolve()), samples))
    bar.close()
    write_index(shards, str(out_dir.resolve() / INDEX_NAME), name)
    return shards, skipped


def index_shards(urls: list[str], location: str, name: str, fractions: SplitFractions) -> list[Shard]:
    """Read shards once (from any tool following the WebDataset layout) and write their index.

    A sample's label comes from its .json (``label``) or .cls; source and group from the
    .json when given (else the index name and the sample key); a sample without a split is
    hashed into one by its group with ``fractions``.
    """
    shards = []
    for url in tqdm(urls, desc="index", unit="shard", disable=len(urls) < 2):
        samples = [s if s.split else ShardSample(s.member, s.label, s.source, s.group, split_for(s.group, fractions))
                   for s in scan_shard(url, name)]
        shards.append(Shard(url, samples))
    write_index(shards, location, name)
    return shards


def _suffix(path: str) -> str:
    """The image file's extension (lower case), which tells readers its format; ``.bin`` if it has none."""
    ref = parse_member_ref(path)
    suffix = PurePosixPath(ref[1] if ref else path).suffix.lower()
    return suffix if suffix and suffix[1:] not in METADATA_EXTENSIONS else ".bin"


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A member with fixed owner, mode and time, so the same images give byte-identical shards."""
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))
