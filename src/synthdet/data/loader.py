"""Streaming input pipeline: decode and crop in worker processes, collate uint8 batches.

Batches stay uint8 until they reach the model's device, where features are computed;
that keeps worker-to-main transfers four times smaller than float. Files that fail to
decode travel in the batch as failures, so one bad file never stops a run.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from synthdet.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_pil, load_image
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
            if isinstance(item, Image.Image):
                decoded = decode_pil(item, item_name(item, index), self.max_pixels)
            else:
                decoded = load_image(item, self.max_pixels, name=item_name(item, index))
        except ImageDecodeError as exc:
            return index, label, None, exc.reason
        notes = []
        if decoded.reduced_by > 1:
            notes.append(f"decoded at 1/{decoded.reduced_by} scale (very large image)")
        height, width = decoded.pixels.shape[:2]
        crop = getattr(self.transform, "crop", None)
        if crop and (height < crop[0] or width < crop[1]):
            notes.append(f"{width}x{height} is smaller than the {crop[1]}x{crop[0]} crop: reflect-padded")
        out = self.transform(decoded.pixels)
        views, boxes = out if isinstance(out, tuple) else (out[None], None)
        # np.require copies only when needed (crops are views; decoded arrays may be read-only)
        tensor = torch.from_numpy(np.require(views, requirements=["C", "W"])).permute(0, 3, 1, 2)
        return index, label, tensor, "; ".join(notes), boxes, (height, width)


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


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    workers: int = -1,
    sampler: Sampler | None = None,
    shuffle: bool = False,
    pin_memory: bool = False,
    persistent: bool = False,
    drop_last: bool = False,
) -> DataLoader:
    workers = min(resolve_workers(workers), max(1, len(dataset)))
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
