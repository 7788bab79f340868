"""The Python API: ``det = synthdet.load(ckpt); det.predict(paths_or_images)``.

What a result's numbers mean:

- ``prob_synthetic``: calibrated probability that the image is synthetic (temperature
  fitted on validation). With several tiles it comes from their mean logit; with
  ``aggregate="vote"`` it is the share of tiles voting synthetic instead.
- ``tile_spread``: standard deviation of the per-tile probabilities (0 for one view).
  Large values mean parts of the image disagree: a composite, or content the model
  finds hard.
- ``flip_spread``: with ``tta=True``, the mean absolute change of the tile probabilities
  when the image is mirrored. A detector should not care; large values mean it does.
- ``uncertain``: the probability lies within ``uncertainty_band`` of the threshold, or a
  spread exceeds ``max_spread``. Such verdicts deserve a human look.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from PIL import Image

from synthdet import weights
from synthdet.checkpoint import CheckpointError, CheckpointMeta
from synthdet.config import ConfigError
from synthdet.data.decode import DEFAULT_MAX_PIXELS
from synthdet.data.loader import Batch, ImageDataset, ImageInput, item_name, make_loader
from synthdet.data.transforms import EvalTransform, center_box
from synthdet.inference.embeddings import EmbeddingCache, embed_items
from synthdet.inference.inputs import expand_inputs
from synthdet.inference.onnx_export import load_onnx
from synthdet.inference.scoring import forward_views, iter_logits, log_odds, probability_synthetic
from synthdet.inference.tiles import TileTransform
from synthdet.inference.views import make_view
from synthdet.network import load_network
from synthdet.provenance import Provenance, combine, read_provenance
from synthdet.runtime import resolve_device, resolve_precision


#: The detector shipped in the package, used when no model is named.
DEFAULT_MODEL, DEFAULT_MODEL_FILE = "default", "default_detector.safetensors"
#: Keeps the log-odds of a unanimous tile vote finite.
VOTE_EPS = 1e-3


@dataclass
class PredictOptions:
    """How images are scored; every field is also a keyword of :meth:`Detector.predict`."""

    tiles: bool | None = None  # True: tiles over the image; False: one center crop; None: the model's view
    overlap: float = 0.25  # wanted overlap between neighbouring tiles (fraction of a tile)
    max_tiles: int = 64  # cap per image; very large images get a thinner grid
    aggregate: str = "mean"  # "mean" (mean tile logit) or "vote" (share of tiles voting synthetic)
    tta: bool = False  # also score mirrored views
    threshold: float | None = None  # None: the checkpoint's
    uncertainty_band: float = 0.1
    max_spread: float = 0.25
    keep_tiles: bool = False  # put per-tile boxes and probabilities in the results
    batch_size: int = 32
    workers: int = -1
    cache: bool = True  # frozen-backbone models: reuse (and store) embeddings of files seen before
    max_pixels: int = DEFAULT_MAX_PIXELS  # pixel budget of one image: what is decoded, and its tiles
    provenance: bool = True  # also read C2PA, IPTC source type, generator settings and EXIF (synthdet.provenance)

    def __post_init__(self):
        if self.aggregate not in ("mean", "vote"):
            raise ConfigError(f"aggregate must be 'mean' or 'vote', got {self.aggregate!r}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.max_tiles < 1:
            raise ConfigError(f"max_tiles must be at least 1, got {self.max_tiles}")
        if self.threshold is not None and not 0 < self.threshold < 1:  # also refuses NaN
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.workers < -1:
            raise ConfigError(f"workers must be -1 (one per core), 0 or more, got {self.workers}")
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")


@dataclass
class Prediction:
    """The verdict on one input. ``error`` is set (and the rest empty) when it could not be read."""

    input: str
    label: str | None = None  # "real" or "synthetic"
    prob_synthetic: float | None = None
    logit: float | None = None  # calibrated log-odds of synthetic: ranks images where probabilities round to 0 or 1
    error: str | None = None
    note: str = ""  # what preprocessing had to do, e.g. padding of a small image
    uncertain: bool | None = None
    tile_spread: float | None = None
    flip_spread: float | None = None
    n_tiles: int = 0
    image_size: tuple[int, int] | None = None  # (height, width) as decoded
    tiles: list[dict] | None = field(default=None, repr=False)  # with keep_tiles: box and probability
    # The pixel verdict above stays as it is; provenance (what the file declares) sits beside it, and
    # ``verdict`` combines both: basis "declared", "both" or "pixels" (synthdet.provenance.combine).
    provenance: dict | None = field(default=None, repr=False)
    verdict: str | None = None
    basis: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def with_provenance(self, provenance: Provenance | None) -> "Prediction":
        """This prediction with the file's provenance beside the pixels, and the combined verdict."""
        if self.ok:
            self.provenance = provenance.to_dict() if provenance is not None else None
            self.verdict, self.basis = combine(self.label, provenance)
        return self

    def to_dict(self) -> dict:
        return asdict(self)


class Detector:
    """A loaded checkpoint ready to score images; every preprocessing setting comes from it.

    Runtime switches (none changes the preprocessing): ``precision`` (``fp32``, ``bf16``,
    or ``auto``: bf16 for frozen-backbone probes where bfloat16 is native, fp32 otherwise),
    ``channels_last`` changes the backbone's memory layout, ``compile`` wraps the network
    in ``torch.compile``. benchmarks/ measure each.

    Models on a frozen pretrained backbone (probes) keep the backbone's outputs in the
    embedding cache, so scoring the same files again only runs the head.
    """

    def __init__(self, net: torch.nn.Module, meta: CheckpointMeta, device: torch.device,
                 precision: str = "auto", channels_last: bool = False, compile: bool = False):
        self.net = net.to(device).eval()
        self.meta = meta
        self.device = device
        self.embeds = hasattr(getattr(net, "backbone", None), "embed_parts")
        self.precision = resolve_precision(precision, device, self.embeds)
        if channels_last:
            self.net.use_channels_last()
        self.runner = torch.compile(self.net) if compile else self.net
        self._cache: EmbeddingCache | None = None

    @property
    def cache(self) -> EmbeddingCache | None:
        """The embedding cache of this model's backbone and precision (opened on first use)."""
        ref = self.meta.model.pretrained
        if self._cache is None and self.embeds and ref is not None:
            options = self.meta.model.options
            self._cache = EmbeddingCache({"weights": ref.weights, "tensors_sha256": ref.identity,
                                          "backbone": options.get("backbone"),
                                          "backbone_options": options.get("backbone_options") or {},
                                          "precision": self.precision})
        return self._cache

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str = "auto",
             log: Callable[[str], None] = weights.to_stderr, **runtime) -> "Detector":
        """A checkpoint (.safetensors), an exported .onnx, or (None / "default") the shipped detector.

        ``log`` hears about a backbone fetched on first use.
        """
        path = model_path(path)
        if path.suffix == ".onnx":
            asked = {k: v for k, v in runtime.items() if v not in (False, "fp32", "auto")}
            if asked or device not in ("auto", "cpu"):
                raise ConfigError(f"{path}: an ONNX model runs on onnxruntime's CPU provider; device and runtime "
                                  f"switches ({', '.join(asked) or device}) apply to .safetensors checkpoints only")
            net, meta = load_onnx(path)
            return cls(net, meta, torch.device("cpu"))
        net, meta = load_network(path, log)
        return cls(net, meta, resolve_device(device), **runtime)

    @property
    def crop(self) -> tuple[int, int]:
        return tuple(self.meta.crop)

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    def threshold_for(self, override: float | None) -> float:
        """The decision threshold: ``override`` when given, else the checkpoint's."""
        return self.threshold if override is None else override

    def predict(self, inputs: ImageInput | Iterable[ImageInput], progress: bool = False, **options) -> list[Prediction]:
        """Score files, folders, glob patterns or PIL images; one :class:`Prediction` each, in order.

        Keywords are :class:`PredictOptions` fields, e.g. ``tiles=False``, ``tta=True``.
        """
        return list(self.predict_iter(inputs, progress, **options))

    def predict_iter(self, inputs: ImageInput | Iterable[ImageInput], progress: bool = False,
                     options: PredictOptions | None = None, **kwargs) -> Iterator[Prediction]:
        """Like :meth:`predict` but streams results, so memory does not grow with the input count."""
        items, problems = _expand(inputs)
        for item, problem in problems:
            yield Prediction(input=item, error=problem)
        yield from self.score_items(items, options or PredictOptions(**kwargs), progress)

    def view_transform(self, options: PredictOptions):
        """The loader transform ``options`` ask for: tiles, a center crop, or the checkpoint's own view.

        A checkpoint without a view is scored with tiles (predict's default since the start).
        The tiles of one image never hold more pixels than the pixel budget allows one image.
        """
        if options.tiles is None and self.meta.view is not None:
            transform = make_view(self.meta.view, self.crop)
        elif options.tiles is False:
            return EvalTransform(self.crop)
        else:
            transform = TileTransform(self.crop, options.overlap, options.max_tiles)
        if isinstance(transform, TileTransform):
            within_budget = max(1, options.max_pixels // (self.crop[0] * self.crop[1]))
            transform = dataclasses.replace(transform, max_tiles=min(transform.max_tiles, within_budget))
        return transform

    def iter_batches(self, items: Sequence[ImageInput], batch_size: int = 32, workers: int = -1,
                     progress: bool = False, transform=None, cache: bool = True,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[tuple[Batch, torch.Tensor]]:
        """Raw (uncalibrated) logits per view, batch by batch; failed files ride along in each batch.

        ``transform`` replaces the checkpoint's center crop (views, tiles, robustness perturbations).
        """
        if any(isinstance(item, Image.Image) for item in items) or len(items) <= batch_size:
            workers = 0  # not worth starting processes (or pickling open images) for
        transform = transform or EvalTransform(self.crop)
        if self.embeds:
            probe = self.net.backbone
            for batch, parts in embed_items(self.net, items, transform, self.cache if cache else None, self.device,
                                            self.precision, batch_size, workers, "embed" if progress else None,
                                            max_pixels):
                with torch.inference_mode():
                    logits = probe.head(probe.select(parts)).float() if parts else torch.empty(0, 2)
                yield batch, logits
            return
        # A tiled image brings up to max_tiles views: load fewer images per batch, and let
        # iter_logits run the views through the network batch_size at a time.
        images_per_batch = max(1, batch_size // 8) if isinstance(transform, TileTransform) else batch_size
        dataset = ImageDataset(items, transform, max_pixels=max_pixels)
        loader = make_loader(dataset, images_per_batch, workers, pin_memory=self.device.type == "cuda")
        yield from iter_logits(self.runner, loader, self.device, self.precision,
                               progress="predict" if progress else None, max_views=batch_size)

    def score_items(self, items: Sequence[ImageInput], options: PredictOptions | None = None,
                    progress: bool = False, transform=None) -> Iterator[Prediction]:
        """Predictions for already expanded items (paths or PIL images), in input order."""
        options = options or PredictOptions()
        threshold = self.threshold_for(options.threshold)
        transform = transform or self.view_transform(options)
        # a center crop reports no box of its own: a heatmap still shows where the model looked
        one_crop = options.keep_tiles and isinstance(transform, EvalTransform)
        ready: dict[int, Prediction] = {}  # batches may arrive out of order (cached images first)
        next_index = 0
        batches = self.iter_batches(items, options.batch_size, options.workers, progress, transform,
                                    cache=options.cache and not options.tta, max_pixels=options.max_pixels)
        for batch, logits in batches:
            flipped = self._flipped_logits(batch, options.batch_size) if options.tta and len(batch) else None
            by_index = {}
            start = 0
            for i, index in enumerate(batch.indices.tolist()):
                views = slice(start, start + batch.views[i])
                start += batch.views[i]
                by_index[index] = self._aggregate(
                    item_name(items[index], index), logits[views], None if flipped is None else flipped[views],
                    [center_box(*batch.sizes[i], *self.crop)] if one_crop else batch.boxes[i], batch.sizes[i],
                    batch.notes[i], threshold, options,
                )
            by_index.update({i: Prediction(item_name(items[i], i), error=reason) for i, reason in batch.failures})
            ready.update(by_index)
            while next_index in ready:
                declared = _provenance(items[next_index]) if options.provenance and ready[next_index].ok else None
                yield ready.pop(next_index).with_provenance(declared)
                next_index += 1

    def _flipped_logits(self, batch: Batch, max_views: int) -> torch.Tensor:
        return forward_views(self.runner, batch.images.flip(-1), self.device, max_views, self.precision)

    def _aggregate(self, name, logits, flipped, boxes, size, note, threshold, options) -> Prediction:
        temperature = self.meta.temperature
        tile_probs = probability_synthetic(logits, temperature)
        flip_spread = None
        if flipped is not None:
            flip_spread = float((probability_synthetic(flipped, temperature) - tile_probs).abs().mean())
            logits = (logits + flipped) / 2
            tile_probs = probability_synthetic(logits, temperature)
        if options.aggregate == "vote":
            prob = float((tile_probs >= threshold).float().mean())
            logit = math.log((prob + VOTE_EPS) / (1 - prob + VOTE_EPS))
        else:
            prob = float(probability_synthetic(logits.mean(0, keepdim=True), temperature)[0])
            logit = float(log_odds(logits.mean(0, keepdim=True), temperature)[0])
        if not torch.isfinite(tile_probs).all() or not math.isfinite(prob):  # never a verdict from NaN
            return Prediction(input=name, error="the model gave no finite score for this image", note=note,
                              image_size=tuple(size))
        spread = float(tile_probs.std(unbiased=False)) if len(tile_probs) > 1 else 0.0
        uncertain = (abs(prob - threshold) < options.uncertainty_band or spread > options.max_spread
                     or (flip_spread or 0.0) > options.max_spread)
        tiles = None
        if options.keep_tiles and boxes is not None:
            tiles = [{"top": t, "left": l, "height": h, "width": w, "prob_synthetic": float(p)}
                     for (t, l, h, w), p in zip(boxes, tile_probs.tolist())]
        return Prediction(
            input=name, label=self.meta.class_names[int(prob >= threshold)], prob_synthetic=prob, logit=logit, note=note,
            uncertain=bool(uncertain), tile_spread=spread, flip_spread=flip_spread, n_tiles=len(tile_probs),
            image_size=tuple(size), tiles=tiles,
        )


def _provenance(item: ImageInput) -> Provenance | None:
    """What a local file or uploaded bytes declare; None for in-memory images and remote URLs."""
    if isinstance(item, io.BytesIO):
        return read_provenance(item.getvalue())
    if isinstance(item, (str, os.PathLike)) and Path(item).is_file():
        return read_provenance(item)
    return None


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


def model_path(model: str | os.PathLike | None) -> Path:
    """The file of a model argument: the shipped default detector for None or "default"."""
    if model is None or str(model) == DEFAULT_MODEL:
        path = Path(str(resources.files("synthdet.resources").joinpath(DEFAULT_MODEL_FILE)))
        if not path.is_file():
            raise CheckpointError(f"this synthdet build ships no default model ({path} is missing); "
                                  f"give a checkpoint with --model")
        return path
    return Path(model)


def load(path: str | os.PathLike | Path | None = None, device: str = "auto", **runtime) -> Detector:
    """Load a checkpoint (.safetensors, or an exported .onnx) for inference; nothing else is needed.

    Without a path: the shipped default detector (``synthdet info`` prints its card).

    ``runtime`` takes the speed switches ``precision``, ``channels_last``, ``compile``.
    """
    return Detector.load(path, device, **runtime)
