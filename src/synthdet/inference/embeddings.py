"""The embedding cache: a frozen backbone's outputs per (image content, view), computed once.

A probe's backbone never changes, so what it makes of an image's view is kept on disk,
keyed by the sha1 of the file's bytes and the view's ``cache_key``, in one SQLite file per
namespace: backbone weights (key and sha256), backbone options, precision and
:data:`PREPROCESSING_VERSION`. Change any of them and a new namespace starts empty, so a
stale entry is never read. Leave-one-source-out over ten sources then trains ten heads
on cached vectors instead of running the backbone ten times.

The cache lives in ``$SYNTHDET_HOME/embeddings``; each namespace has a JSON file beside
its database saying what it holds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from synthdet.data.loader import Batch, ImageDataset, ImageInput, make_loader
from synthdet.inference.scoring import run_in_chunks
from synthdet.inference.tiles import TileTransform
from synthdet.weights import synthdet_home

#: Bump when decoding, views or the low-level statistics change the numbers a view gives.
PREPROCESSING_VERSION = 1


@dataclass
class CachedImage:
    """What one image's view gave: each part as V x d (V views), and what decoding noted."""

    parts: dict[str, np.ndarray]
    note: str
    size: tuple[int, int]
    boxes: list | None

    @property
    def views(self) -> int:
        return len(next(iter(self.parts.values())))


class EmbeddingCache:
    def __init__(self, namespace: dict, root: Path | None = None):
        self.namespace = {**namespace, "preprocessing": PREPROCESSING_VERSION}
        text = json.dumps(self.namespace, sort_keys=True)
        root = Path(root or synthdet_home() / "embeddings")
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / f"{hashlib.sha256(text.encode()).hexdigest()[:20]}.sqlite"
        description = self.path.with_suffix(".json")
        if not description.is_file():
            description.write_text(json.dumps(self.namespace, indent=2, sort_keys=True))
        # The service scores on a thread pool: one connection, used under a lock.
        self._db = sqlite3.connect(self.path, timeout=120, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS views (key TEXT PRIMARY KEY, meta TEXT, data BLOB)")

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedImage]:
        found: dict[str, CachedImage] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):
                chunk = unique[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, meta, data FROM views WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                found.update({key: _decode(meta, data) for key, meta, data in rows})
        return found

    def put_many(self, entries: dict[str, CachedImage]) -> None:
        rows = [(key, *_encode(entry)) for key, entry in entries.items()]
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO views (key, meta, data) VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM views").fetchone()[0]


def _encode(entry: CachedImage) -> tuple[str, bytes]:
    names = sorted(entry.parts)
    meta = {"parts": {n: list(entry.parts[n].shape) for n in names}, "note": entry.note, "size": list(entry.size),
            "boxes": entry.boxes}
    data = b"".join(np.ascontiguousarray(entry.parts[n], dtype=np.float32).tobytes() for n in names)
    return json.dumps(meta), data


def _decode(meta_text: str, data: bytes) -> CachedImage:
    meta = json.loads(meta_text)
    parts, offset = {}, 0
    for name, shape in meta["parts"].items():
        count = int(np.prod(shape))
        parts[name] = np.frombuffer(data, dtype=np.float32, count=count, offset=offset).reshape(shape)
        offset += 4 * count
    return CachedImage(parts, meta["note"], tuple(meta["size"]), meta["boxes"])


def content_key(item: ImageInput, view_key: str) -> str | None:
    """The cache key of a file under a view: its bytes' sha1 and the view; None when not a readable file."""
    if not isinstance(item, (str, os.PathLike)):
        return None
    digest = hashlib.sha1()
    try:
        with open(item, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    except OSError:
        return None  # the loader reports why
    return f"{view_key}:{digest.hexdigest()}"


def embed_items(net: torch.nn.Module, items: Sequence[ImageInput], transform, cache: EmbeddingCache | None,
                device: torch.device, precision: str = "fp32", batch_size: int = 32, workers: int = -1,
                progress: str | None = None, max_pixels: int | None = None) -> Iterator[tuple[Batch, dict]]:
    """Each batch of ``items`` (in input order) with its views' parts (``net.backbone.embed_parts``).

    Images whose view is cached skip decoding and the backbone; the others are decoded in
    worker processes, embedded, and stored. Failed files ride along in the batches.
    """
    view_key = getattr(transform, "cache_key", None)
    keys = [content_key(item, view_key) if cache is not None and view_key else None for item in items]
    hits = cache.get_many([k for k in keys if k]) if cache is not None else {}
    missing = [i for i, k in enumerate(keys) if k not in hits]
    cached = [i for i, k in enumerate(keys) if k in hits]
    tiled = isinstance(transform, TileTransform) or isinstance(getattr(transform, "view", None), TileTransform)
    images_per_batch = max(1, batch_size // 8) if tiled else batch_size
    if len(missing) <= images_per_batch:
        workers = 0  # not worth starting processes for
    dataset = ImageDataset([items[i] for i in missing], transform,
                           **({"max_pixels": max_pixels} if max_pixels else {}))
    loader = make_loader(dataset, images_per_batch, workers, pin_memory=device.type == "cuda") if missing else []
    bar = tqdm(total=len(items), desc=progress, disable=progress is None, unit="image", leave=False)
    next_hit = 0

    def hits_before(limit: int):
        nonlocal next_hit
        start = next_hit
        while next_hit < len(cached) and cached[next_hit] < limit:
            next_hit += 1
        for first in range(start, next_hit, batch_size):
            chunk = cached[first : min(first + batch_size, next_hit)]
            bar.update(len(chunk))
            yield _cached_batch(chunk, [hits[keys[i]] for i in chunk])

    for batch in loader:
        original = [missing[j] for j in batch.indices.tolist()]
        failures = [(missing[j], reason) for j, reason in batch.failures]
        yield from hits_before(min(original + [i for i, _ in failures]))
        parts = _embed(net, batch.images, device, precision, batch_size) if len(batch) else {}
        if cache is not None and parts:
            cache.put_many(_split(parts, batch, original, keys))
        batch.indices = torch.tensor(original, dtype=torch.long)
        batch.failures = failures
        bar.update(len(original) + len(failures))
        yield batch, parts
    yield from hits_before(len(items))
    bar.close()


def _embed(net, images: torch.Tensor, device: torch.device, precision: str, max_views: int) -> dict:
    chunks = list(run_in_chunks(lambda x: net.backbone.embed_parts(net.inputs(x)), images, device, max_views,
                                precision))
    return {name: torch.cat([c[name].float().cpu() for c in chunks]) for name in chunks[0]}


def _split(parts: dict, batch: Batch, original: list[int], keys: list[str | None]) -> dict[str, CachedImage]:
    """One cache entry per image of a decoded batch (images may have several views)."""
    entries, start = {}, 0
    for i, index in enumerate(original):
        views = slice(start, start + batch.views[i])
        start += batch.views[i]
        if keys[index] is not None:
            entries[keys[index]] = CachedImage({k: v[views].numpy() for k, v in parts.items()}, batch.notes[i],
                                               tuple(batch.sizes[i]), batch.boxes[i])
    return entries


def _cached_batch(indices: list[int], images: list[CachedImage]) -> tuple[Batch, dict]:
    batch = Batch(images=torch.empty(0, 3, 0, 0, dtype=torch.uint8), labels=torch.full((len(indices),), -1),
                  indices=torch.tensor(indices, dtype=torch.long), notes=[c.note for c in images],
                  views=[c.views for c in images], boxes=[c.boxes for c in images],
                  sizes=[c.size for c in images])
    parts = {name: torch.from_numpy(np.concatenate([c.parts[name] for c in images])) for name in images[0].parts}
    return batch, parts
