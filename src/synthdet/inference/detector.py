"""The Python API: ``det = synthdet.load(ckpt); det.predict(paths_or_images)``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from PIL import Image

from synthdet.checkpoint import CheckpointMeta, load_checkpoint
from synthdet.data.loader import Batch, ImageDataset, ImageInput, item_name, make_loader
from synthdet.data.transforms import EvalTransform
from synthdet.inference.inputs import expand_inputs
from synthdet.inference.scoring import iter_logits, probability_synthetic
from synthdet.runtime import resolve_device


@dataclass
class Prediction:
    """The verdict on one input. ``error`` is set (and the rest empty) when it could not be read."""

    input: str
    label: str | None = None  # "real" or "synthetic"
    prob_synthetic: float | None = None  # calibrated probability that the image is synthetic
    error: str | None = None
    note: str = ""  # what preprocessing had to do, e.g. padding of a small image

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)


class Detector:
    """A loaded checkpoint ready to score images; every preprocessing setting comes from it."""

    def __init__(self, net: torch.nn.Module, meta: CheckpointMeta, device: torch.device):
        self.net = net.to(device).eval()
        self.meta = meta
        self.device = device

    @classmethod
    def load(cls, path: str | os.PathLike, device: str = "auto") -> "Detector":
        net, meta = load_checkpoint(path)
        return cls(net, meta, resolve_device(device))

    @property
    def crop(self) -> tuple[int, int]:
        return tuple(self.meta.crop)

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    def predict(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        batch_size: int = 32,
        workers: int = -1,
        threshold: float | None = None,
        progress: bool = False,
    ) -> list[Prediction]:
        """Score files, folders, glob patterns or PIL images; one :class:`Prediction` each, in order."""
        return list(self.predict_iter(inputs, batch_size, workers, threshold, progress))

    def predict_iter(
        self,
        inputs: ImageInput | Iterable[ImageInput],
        batch_size: int = 32,
        workers: int = -1,
        threshold: float | None = None,
        progress: bool = False,
    ) -> Iterator[Prediction]:
        """Like :meth:`predict` but streams results, so memory does not grow with the input count."""
        items, problems = _expand(inputs)
        for item, problem in problems:
            yield Prediction(input=item, error=problem)
        yield from self.score_items(items, batch_size, workers, threshold, progress)

    def iter_batches(
        self,
        items: Sequence[ImageInput],
        batch_size: int = 32,
        workers: int = -1,
        progress: bool = False,
        transform=None,
    ) -> Iterator[tuple[Batch, torch.Tensor]]:
        """Raw (uncalibrated) logits per batch of items; failed files ride along in each batch.

        ``transform`` replaces the checkpoint's center crop (robustness sweeps perturb first).
        """
        if any(isinstance(item, Image.Image) for item in items) or len(items) <= batch_size:
            workers = 0  # not worth starting processes (or pickling open images) for
        dataset = ImageDataset(items, transform or EvalTransform(self.crop))
        loader = make_loader(dataset, batch_size, workers, pin_memory=self.device.type == "cuda")
        yield from iter_logits(self.net, loader, self.device, progress="predict" if progress else None)

    def score_items(
        self,
        items: Sequence[ImageInput],
        batch_size: int = 32,
        workers: int = -1,
        threshold: float | None = None,
        progress: bool = False,
        transform=None,
    ) -> Iterator[Prediction]:
        """Predictions for already expanded items (paths or PIL images), in input order."""
        threshold = self.threshold if threshold is None else threshold
        for batch, logits in self.iter_batches(items, batch_size, workers, progress, transform):
            probs = probability_synthetic(logits, self.meta.temperature).tolist() if len(batch) else []
            by_index = {
                i: Prediction(item_name(items[i], i), self.meta.class_names[int(p >= threshold)], p, note=note)
                for i, p, note in zip(batch.indices.tolist(), probs, batch.notes)
            }
            by_index.update({i: Prediction(item_name(items[i], i), error=reason) for i, reason in batch.failures})
            for index in sorted(by_index):
                yield by_index[index]


def _expand(inputs) -> tuple[list[ImageInput], list[tuple[str, str]]]:
    if isinstance(inputs, (str, os.PathLike, Image.Image)):
        inputs = [inputs]
    items: list[ImageInput] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        if isinstance(item, Image.Image):
            items.append(item)
        else:
            files, bad = expand_inputs([item])
            items.extend(files)
            problems.extend(bad)
    return items, problems


def load(path: str | os.PathLike | Path, device: str = "auto") -> Detector:
    """Load a checkpoint for inference; no other settings are needed."""
    return Detector.load(path, device)
