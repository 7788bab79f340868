"""Streaming input pipeline: decode and crop in worker processes, collate uint8 batches.

Batches stay uint8 until they reach the model's device, where features are computed;
that keeps worker-to-main transfers four times smaller than float. Files that fail to
decode travel in the batch as failures, so one bad file never stops a run.

An item is a local file, a URL, a tar shard member (``SHARD.tar#MEMBER``), a PIL image or
a binary file object; :class:`ImageDataset` reads items by position, :class:`ShardStream`
reads whole shards in order for training.
"""

from __future__ import annotations

import csv
import io
import itertools
import multiprocessing
import os
import random
import threading
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence, Union

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, get_worker_info

from synthdet.data.decode import DEFAULT_MAX_PIXELS, DecodedImage, ImageDecodeError, decode_pil, load_image
from synthdet.data.shards import iter_members, parse_member_ref, read_image_bytes
from synthdet.data.storage import is_url
from synthdet.rundir import atomic_path

#: What a loader item can be: a file path, an already opened PIL image, or a binary file
#: object (an upload; its ``name`` attribute, if set, names it).
ImageInput = Union[str, os.PathLike, Image.Image, BinaryIO]


def item_name(item: ImageInput, index: int) -> str:
    """How an input is named in results and error reports."""
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {index}>"
    if hasattr(item, "read"):
        return getattr(item, "name", None) or f"<file {index}>"
    return str(item)


@dataclass
class Batch:
    """A batch of decoded images; each image gives one view (a crop) or several (tiles).

    ``images`` holds every view, image after image; ``views[i]`` says how many belong to
    image i. Per-image fields (labels, indices, notes, boxes, sizes) have one entry per image.
    """

    images: torch.Tensor  # V x 3 x h x w, uint8 (V = sum of views)
    labels: torch.Tensor  # B, long; -1 where unknown
    indices: torch.Tensor  # B, position of each image in the dataset
    notes: list[str]  # per image: what decoding had to do ("" when nothing)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (dataset index, reason)
    views: list[int] = field(default_factory=list)  # views per image
    boxes: list[list | None] = field(default_factory=list)  # per image: (top, left, h, w) of each view
    sizes: list[tuple[int, int]] = field(default_factory=list)  # per image: decoded (height, width)

    def __len__(self) -> int:
        return len(self.indices)


class ImageDataset(Dataset):
    """Decodes ``items[i]`` and applies ``transform``.

    A transform maps uint8 H x W x 3 to one view (h x w x 3), or to several views with
    their boxes: (K x h x w x 3, [(top, left, height, width), ...]).
    """

    def __init__(
        self,
        items: Sequence[ImageInput],
        transform: Callable[[np.ndarray], np.ndarray],
        labels: Sequence[int] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.items = items
        self.labels = labels
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        item = self.items[index]
        label = -1 if self.labels is None else int(self.labels[index])
        try:
            decoded = decode_item(item, index, self.max_pixels)
        except ImageDecodeError as exc:
            return index, label, None, exc.reason
        return make_sample(index, label, decoded, self.transform)


def decode_item(item: ImageInput, index: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode a PIL image, a file (path or object), a URL or a shard member; raises :class:`ImageDecodeError`."""
    name = item_name(item, index)
    if isinstance(item, Image.Image):
        return decode_pil(item, name, max_pixels)
    if isinstance(item, (str, os.PathLike)) and (is_url(name) or parse_member_ref(name)):
        try:
            item = io.BytesIO(read_image_bytes(name))
        except (OSError, ValueError, tarfile.TarError) as exc:
            raise ImageDecodeError(name, f"cannot read ({exc})") from exc
    return load_image(item, max_pixels, name=name)


def make_sample(index: int, label: int, decoded: DecodedImage, transform: Callable):
    """The loader item of a decoded image: its views (crops or tiles) and what decoding had to do."""
    notes = []
    if decoded.reduced_by > 1:
        notes.append(f"decoded at 1/{decoded.reduced_by} scale (very large image)")
    height, width = decoded.pixels.shape[:2]
    crop = getattr(transform, "crop", None)
    if crop and (height < crop[0] or width < crop[1]):
        notes.append(f"{width}x{height} is smaller than the {crop[1]}x{crop[0]} crop: reflect-padded")
    out = transform(decoded.pixels)
    views, boxes = out if isinstance(out, tuple) else (out[None], None)
    # np.require copies only when needed (crops are views; decoded arrays may be read-only)
    tensor = torch.from_numpy(np.require(views, requirements=["C", "W"])).permute(0, 3, 1, 2)
    return index, label, tensor, "; ".join(notes), boxes, (height, width)


class ShardStream(IterableDataset):
    """Training images read shard after shard, each from start to end: what object stores serve fastest.

    ``refs`` are shard members (``SHARD.tar#MEMBER``); items are :class:`ImageDataset`'s,
    failures included, with ``index`` the position in ``refs``. Each of the ``world``
    processes' DataLoader workers reads its own shards, or, with fewer shards than
    readers, every n-th image of each. With ``balance``, an image of class c is repeated
    N / (2 n_c) times on average, as often as a weighted sampler with replacement draws it;
    a shuffle buffer mixes neighbours. The stream never ends, so training takes the same
    number of batches per epoch on every process (DistributedDataParallel needs that).
    """

    def __init__(self, refs: Sequence[str], labels: Sequence[int], transform: Callable,
                 max_pixels: int = DEFAULT_MAX_PIXELS, balance: bool = True, seed: int = 0, rank: int = 0,
                 world: int = 1, buffer: int = 256):
        self.refs, self.labels, self.transform, self.max_pixels = refs, labels, transform, max_pixels
        self.seed, self.rank, self.world, self.buffer = seed, rank, world, buffer
        self.members: dict[str, dict[str, int]] = {}  # shard -> member -> index
        for index, ref in enumerate(refs):
            shard, member = parse_member_ref(ref)
            self.members.setdefault(shard, {})[member] = index
        counts = Counter(labels)
        self.repeats = {c: len(labels) / (len(counts) * n) if balance else 1.0 for c, n in counts.items()}

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (1, 0)
        readers, reader = self.world * workers, self.rank * workers + worker
        rng = random.Random(f"{self.seed}:{reader}")
        buffer: list[tuple[int, bytes | str]] = []
        for cycle in itertools.count():
            shards = sorted(self.members)
            random.Random(f"{self.seed}:{cycle}").shuffle(shards)  # the same order for every reader
            if len(shards) >= readers:
                mine, keep = shards[reader::readers], (0, 1)  # every image of its own shards
            else:
                mine, keep = shards, (reader, readers)  # every readers-th image of all shards
            produced = False
            for index, data in self._read(mine, *keep):
                produced = True
                repeats = self.repeats[self.labels[index]]
                for _ in range(int(repeats) + (rng.random() < repeats % 1)):
                    buffer.append((index, data))
                while len(buffer) > self.buffer:
                    yield self._sample(*_pop_random(buffer, rng))
            if not produced:
                return  # this reader has nothing to read; the DataLoader goes on with the others
            while len(buffer) > self.buffer // 2:
                yield self._sample(*_pop_random(buffer, rng))

    def _read(self, shards: list[str], offset: int, stride: int) -> Iterator[tuple[int, bytes | str]]:
        """(index, bytes) of the wanted images numbered offset, offset + stride, ... over ``shards``.

        When a shard breaks off (missing, truncated), its images not read yet come as
        (index, reason), to be reported like files that fail to decode.
        """
        position = 0
        for shard in shards:
            wanted = self.members[shard]
            mine = {m for i, m in enumerate(sorted(wanted, key=wanted.get)) if (position + i) % stride == offset}
            position += len(wanted)
            try:
                for name, data in iter_members(shard, lambda n: n in mine):
                    if name in mine:
                        mine.discard(name)
                        yield wanted[name], data
            except (OSError, ValueError, tarfile.TarError) as exc:
                for name in mine:
                    yield wanted[name], f"cannot read the shard ({exc})"

    def _sample(self, index: int, data: bytes | str):
        label = int(self.labels[index])
        if isinstance(data, str):
            return index, label, None, data
        try:
            decoded = load_image(io.BytesIO(data), self.max_pixels, name=self.refs[index])
        except ImageDecodeError as exc:
            return index, label, None, exc.reason
        return make_sample(index, label, decoded, self.transform)


def _pop_random(items: list, rng: random.Random):
    """Remove and return a random element in O(1) (order does not matter in a shuffle buffer)."""
    i = rng.randrange(len(items))
    items[i], items[-1] = items[-1], items[i]
    return items.pop()


def collate(samples) -> Batch:
    good = [s for s in samples if s[2] is not None]
    failures = [(s[0], s[3]) for s in samples if s[2] is None]
    images = torch.cat([s[2] for s in good]) if good else torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    return Batch(
        images=images,
        labels=torch.tensor([s[1] for s in good], dtype=torch.long),
        indices=torch.tensor([s[0] for s in good], dtype=torch.long),
        notes=[s[3] for s in good],
        failures=failures,
        views=[len(s[2]) for s in good],
        boxes=[s[4] for s in good],
        sizes=[s[5] for s in good],
    )


def resolve_workers(workers: int) -> int:
    return (os.cpu_count() or 1) if workers < 0 else workers


#: Seconds a loader waits for a worker's batch before it fails with a message instead of hanging:
#: far above any batch's time (a batch of full-HD images decodes in about a second per core).
WORKER_TIMEOUT = float(os.environ.get("SYNTHDET_WORKER_TIMEOUT", 600))


def worker_context() -> str | None:
    """How DataLoader workers start: ``forkserver`` where a process already runs threads or a
    process group (a worker forked from it can inherit a lock another thread held, and hang
    before it starts: seen under torchrun), the platform's default elsewhere."""
    threaded = threading.active_count() > 1 or (dist.is_available() and dist.is_initialized())
    if not threaded or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    # The server imports synthdet (and torch) once; each worker forks from it ready, in milliseconds
    # instead of the second or so a fresh import takes. Only the first call starts the server.
    multiprocessing.set_forkserver_preload(["synthdet.data.loader"])
    return "forkserver"


def make_loader(
    dataset: ImageDataset | ShardStream,
    batch_size: int,
    workers: int = -1,
    sampler: Sampler | Sequence[int] | None = None,
    shuffle: bool = False,
    pin_memory: bool = False,
    persistent: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    workers = resolve_workers(workers)
    if not isinstance(dataset, IterableDataset):
        workers = min(workers, max(1, len(dataset)))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
        multiprocessing_context=worker_context() if workers > 0 else None,
        timeout=WORKER_TIMEOUT if workers > 0 else 0,
    )


class SkipLog:
    """Files that could not be used, each once, with the reason; written as ``skipped.csv``."""

    def __init__(self):
        self.entries: dict[str, tuple[str, str]] = {}

    def add(self, path: str, reason: str, stage: str) -> None:
        self.entries.setdefault(path, (reason, stage))

    def add_batch_failures(self, batch: Batch, names: Sequence[str], stage: str) -> None:
        for index, reason in batch.failures:
            self.add(names[index], reason, stage)

    def __len__(self) -> int:
        return len(self.entries)

    def write(self, path: Path) -> None:
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "reason", "stage"])
            for file, (reason, stage) in sorted(self.entries.items()):
                writer.writerow([file, reason, stage])

    def summary(self) -> str:
        return f"{len(self)} file(s) skipped" if self.entries else "no files skipped"
