"""Training a probe: embed the training and validation images once, then fit the head on vectors.

The backbone is frozen, so its outputs for every view (and augmented copy) of every image
come from the embedding cache after the first run. The head is then fitted in seconds:

- ``linear``: scikit-learn logistic regression, its regularization C chosen on validation
  from a grid (each candidate is a row of ``metrics.jsonl``);
- ``mlp``: a one-hidden-layer network trained with AdamW for ``train.epochs`` epochs, the
  epoch chosen on validation.

Training samples are weighted per (source, label): each class weighs half, shared equally
by its sources, so a large source (or one content type) cannot decide the model. Every
view of an image is a training sample; validation scores an image by its views' mean
logit, as the Detector does.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from synthdet.checkpoint import CheckpointMeta, ModelSpec, Normalization, pretrained_ref
from synthdet.config import AugmentConfig, Config, ViewConfig
from synthdet.data.labels import CLASS_NAMES
from synthdet.data.loader import SkipLog
from synthdet.data.sources import IgnoredFiles, ImageRecord, collect_records, summarize, write_split_csv
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.detector import Detector
from synthdet.inference.embeddings import embed_items
from synthdet.inference.scoring import log_odds, probability_synthetic
from synthdet.inference.views import AugmentedView, make_view
from synthdet.network import build_network, save_network
from synthdet.rundir import new_run_dir, write_atomic
from synthdet.runtime import resolve_device, seed_everything
from synthdet.training.distributed import world
from synthdet.training.trainer import TrainingError, TrainResult

log = logging.getLogger("synthdet.train")

#: Logistic-regression regularization strengths tried (inverse; larger = weaker).
C_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
#: Identity normalization: a probe applies its backbone's own input standardization.
PIXELS = Normalization(mean=[0.0] * 3, std=[1.0] * 3)


@dataclass
class Embedded:
    """Per image: its views' head inputs (V x d), label, source; files that failed are in ``skipped``."""

    vectors: list[torch.Tensor]
    labels: list[int]
    sources: list[str]

    def take(self, indices: list[int]) -> "Embedded":
        """These images only (a fold, a split without one source)."""
        return Embedded([self.vectors[i] for i in indices], [self.labels[i] for i in indices],
                        [self.sources[i] for i in indices])


def train_probe(config: Config, resume: str | Path | None = None, progress: bool = True,
                records: list[ImageRecord] | None = None) -> TrainResult:
    if resume:
        raise TrainingError("a probe trains in one go from cached embeddings; start a new run instead of --resume")
    if world().size > 1:
        raise TrainingError(f"probes ({config.model.name}) train in one process: the head fits in seconds on "
                            f"cached embeddings; run without torchrun or --nproc")
    if config.model.pretrained is None:
        raise TrainingError("a probe needs model.pretrained: a weights key (see `synthdet weights list`) or a file")
    if config.features.representations != ["rgb"] or config.features.grayscale:
        raise TrainingError("a probe reads RGB pixels: set features.representations: [rgb]")
    seed_everything(config.seed)
    ignored = IgnoredFiles()
    if records is None:
        records = collect_records(config.data.sources, config.data.splits, config.seed, ignored)
    train_records = [r for r in records if r.split == "train"]
    val_records = [r for r in records if r.split == "val"]
    missing = [CLASS_NAMES[c] for c in (0, 1) if not any(r.label == c for r in train_records)]
    if missing:
        raise TrainingError(f"the training split has no {' or '.join(missing)} images; add a source with that label")
    if not val_records:
        raise TrainingError("the validation split is empty, so no head could be selected; raise data.splits.val")

    run = new_run_dir(config.output_dir, config.name).prepare()
    write_atomic(run.config, config.to_yaml())
    write_split_csv(records, run.splits)
    net = build_network(config.features, config.model.name, config.model.options, pretrained=config.model.pretrained,
                        normalization=PIXELS)
    view = config.data.view or ViewConfig()
    meta = CheckpointMeta(
        model=ModelSpec(name=config.model.name, in_chans=3, options=config.model.options,
                        pretrained=pretrained_ref(config.model.pretrained)),
        features=config.features, crop=config.data.crop, view=view, threshold=config.train.threshold,
    )
    detector = Detector(net, meta, resolve_device(config.train.device))
    skipped = SkipLog()
    started = time.perf_counter()
    transform = make_view(view, config.data.crop)
    train = embed_records(detector, train_records, training_views(transform, config.augment), skipped, "train",
                          config, progress)
    val = embed_records(detector, val_records, [transform], skipped, "val", config, progress)
    embed_seconds = time.perf_counter() - started
    log.info("embedded %d training images (%d views each, %d augmented copies) and %d validation images in %.0f s "
             "(%s, cache %s)", len(train.labels), train.vectors[0].shape[0] if train.vectors else 0,
             config.augment.copies, len(val.labels), embed_seconds, detector.precision, detector.cache.path)
    if not train.labels or not val.labels:
        raise TrainingError("no readable training or validation image; see skipped.csv")

    history, best = fit_head(net.backbone.head, train, val, config)
    meta.training = {
        "config": config.model_dump(mode="json"), "data": summarize(records), "val": best["val"],
        "head": {k: v for k, v in best.items() if k != "val"}, "skipped_files": len(skipped),
        "embedding": {"precision": detector.precision, "seconds": round(embed_seconds, 1),
                      "train_views": int(sum(len(v) for v in train.vectors))},
    }
    save_network(run.best, net, meta)
    write_atomic(run.metrics_log, "".join(json.dumps(row) + "\n" for row in history))
    skipped.write(run.skipped)
    summary = {"best_epoch": best["candidate"], "select_metric": config.train.select_metric, "best_val": best["val"],
               "skipped": len(skipped), "ignored": ignored.to_dict(), "data": summarize(records)}
    write_atomic(run.summary, json.dumps(summary, indent=2))
    return TrainResult(run.root, run.best, best["candidate"], best["val"], [], len(skipped))


def training_views(view, augment: AugmentConfig) -> list:
    """The transforms a training image is embedded under: its view (unless ``augment.clean`` is off), then copies."""
    copies = [AugmentedView(view, augment, k) for k in range(augment.copies)]
    return [view, *copies] if augment.clean else copies


def embed_records(detector: Detector, records: list[ImageRecord], transforms: list, skipped: SkipLog, stage: str,
                  config: Config, progress: bool) -> Embedded:
    """Head inputs of every view of every record, under each transform in turn (see ``training_views``)."""
    probe = detector.net.backbone
    per_image: dict[int, list[torch.Tensor]] = {}
    paths = [r.path for r in records]
    for transform in transforms:
        batches = embed_items(detector.net, paths, transform, detector.cache, detector.device, detector.precision,
                              config.train.batch_size, config.data.workers,
                              f"embed {stage} ({transform.cache_key})" if progress else None)
        for batch, parts in batches:
            for index, reason in batch.failures:
                skipped.add(paths[index], reason, stage)
            if not parts:
                continue
            vectors = probe.select(parts)
            start = 0
            for i, index in enumerate(batch.indices.tolist()):
                per_image.setdefault(index, []).append(vectors[start : start + batch.views[i]])
                start += batch.views[i]
    order = sorted(per_image)
    return Embedded([torch.cat(per_image[i]) for i in order], [records[i].label for i in order],
                    [records[i].source for i in order])


def fit_head(head, train: Embedded, val: Embedded, config: Config) -> tuple[list[dict], dict]:
    """Fit ``head`` (linear or MLP, as built) on training vectors, choosing the candidate on validation."""
    fit = _fit_mlp if isinstance(head.classifier, torch.nn.Sequential) else _fit_linear
    return fit(head, train, val, config)


def sample_weights(labels: list[int], sources: list[str]) -> np.ndarray:
    """Each class weighs half, shared equally by its sources; mean weight 1."""
    cells = Counter(zip(labels, sources))
    sources_per_class = Counter(label for label, _ in cells)
    w = np.array([0.5 / (sources_per_class[y] * cells[(y, s)]) for y, s in zip(labels, sources)])
    return w * len(w) / w.sum()


def _training_matrix(data: Embedded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One row per view; an image's weight is shared by its views."""
    weights_per_image = sample_weights(data.labels, data.sources)
    x = torch.cat(data.vectors).numpy()
    y = np.concatenate([[label] * len(v) for label, v in zip(data.labels, data.vectors)])
    w = np.concatenate([[weight / len(v)] * len(v) for weight, v in zip(weights_per_image, data.vectors)])
    return x, y, w


def _validate(head_logits, data: Embedded, threshold: float) -> dict:
    """Metrics of per-image mean logits on the validation images."""
    logits = torch.stack([head_logits(v).mean(0) for v in data.vectors])
    labels = torch.tensor(data.labels)
    metrics = binary_metrics(data.labels, probability_synthetic(logits).tolist(), threshold, log_odds(logits).tolist())
    metrics["loss"] = float(F.cross_entropy(logits, labels))
    return {k: v for k, v in metrics.items() if k != "confusion_matrix"}


def _select(history: list[dict], metric: str) -> int:
    key = {"auc": "val_roc_auc", "accuracy": "val_accuracy", "loss": "val_loss"}[metric]
    sign = -1 if metric == "loss" else 1
    return max(range(len(history)), key=lambda i: (sign * (history[i][key] or 0.0), -history[i]["val_loss"]))


def _set_standardization(head, x: np.ndarray, w: np.ndarray) -> None:
    mean = np.average(x, axis=0, weights=w)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w)) + 1e-6
    head.mean.copy_(torch.from_numpy(mean).float())
    head.std.copy_(torch.from_numpy(std).float())


def _fit_linear(head, train: Embedded, val: Embedded, config: Config) -> tuple[list[dict], dict]:
    """Logistic regression along C_GRID (each fit warm-started from the last), C chosen on validation."""
    x, y, w = _training_matrix(train)
    _set_standardization(head, x, w)
    z = (x - head.mean.numpy()) / head.std.numpy()
    model = LogisticRegression(max_iter=3000, tol=1e-4, warm_start=True)
    history, fits = [], []
    for c in C_GRID:
        model.set_params(C=c)
        model.fit(z, y, sample_weight=w)
        _set_linear(head, model.coef_[0], model.intercept_[0])
        with torch.no_grad():
            val_metrics = _validate(head, val, config.train.threshold)
        p_true = model.predict_proba(z)[np.arange(len(y)), y]
        train_loss = float(np.average(-np.log(np.clip(p_true, 1e-12, 1.0)), weights=w))
        history.append({"candidate": len(history) + 1, "C": c, "train_loss": train_loss,
                        **{f"val_{k}": val_metrics[k] for k in ("loss", "accuracy", "roc_auc", "f1")}})
        fits.append((model.coef_.copy(), model.intercept_.copy(), val_metrics))
        log.info("C %-6g train loss %.4f | val loss %.4f acc %.3f auc %s", c, train_loss, val_metrics["loss"],
                 val_metrics["accuracy"], "n/a" if val_metrics["roc_auc"] is None else f"{val_metrics['roc_auc']:.3f}")
    best = _select(history, config.train.select_metric)
    coef, intercept, val_metrics = fits[best]
    _set_linear(head, coef[0], intercept[0])
    return history, {"candidate": best + 1, "kind": "linear", "C": C_GRID[best], "val": val_metrics}


def _set_linear(head, coef: np.ndarray, intercept: float) -> None:
    """Two logits (0, w.z + b), so softmax gives P(synthetic) = sigmoid(w.z + b)."""
    weight = torch.from_numpy(coef).float()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.stack([torch.zeros_like(weight), weight]))
        head.classifier.bias.copy_(torch.tensor([0.0, float(intercept)]))


def _fit_mlp(head, train: Embedded, val: Embedded, config: Config) -> tuple[list[dict], dict]:
    x, y, w = _training_matrix(train)
    _set_standardization(head, x, w)
    tc = config.train
    x_t, y_t, w_t = torch.from_numpy(x), torch.from_numpy(y).long(), torch.from_numpy(w).float()
    optimizer = torch.optim.AdamW(head.classifier.parameters(), lr=tc.lr, weight_decay=tc.weight_decay or 1e-2)
    steps = math.ceil(len(y) / tc.batch_size)
    generator = torch.Generator().manual_seed(config.seed)
    history, states = [], []
    for epoch in range(tc.epochs):
        head.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for step in range(steps):
            idx = order[step * tc.batch_size : (step + 1) * tc.batch_size]
            losses = F.cross_entropy(head(x_t[idx]), y_t[idx], reduction="none")
            loss = (losses * w_t[idx]).sum() / w_t[idx].sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        head.eval()
        with torch.no_grad():
            val_metrics = _validate(head, val, tc.threshold)
        history.append({"candidate": epoch + 1, "epoch": epoch + 1, "train_loss": total / len(y),
                        **{f"val_{k}": val_metrics[k] for k in ("loss", "accuracy", "roc_auc", "f1")}})
        states.append(({k: v.clone() for k, v in head.state_dict().items()}, val_metrics))
    best = _select(history, tc.select_metric)
    head.load_state_dict(states[best][0])
    return history, {"candidate": best + 1, "kind": "mlp", "epoch": best + 1, "val": states[best][1]}
