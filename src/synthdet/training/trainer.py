"""Training: sources -> network -> epochs, with the checkpoint chosen on the validation split.

The test split is never touched here; it exists for ``synthdet evaluate``.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import RandomSampler, WeightedRandomSampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from synthdet.checkpoint import CheckpointMeta, ModelSpec, save_checkpoint
from synthdet.config import Config, TrainConfig
from synthdet.data.labels import CLASS_NAMES
from synthdet.data.loader import ImageDataset, SkipLog, make_loader
from synthdet.data.sources import ImageRecord, collect_records, summarize, write_split_csv
from synthdet.data.transforms import EvalTransform, TrainTransform
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.scoring import iter_logits, probability_synthetic
from synthdet.models import DetectorNet, build_network
from synthdet.runtime import autocast, resolve_device, seed_everything
from synthdet.training.normalization import measure_feature_stats
from synthdet.training.schedule import make_scheduler

log = logging.getLogger("synthdet.train")

#: Files in a run directory.
CONFIG_FILE, METRICS_FILE, RESUME_FILE = "config.yaml", "metrics.jsonl", "resume.pt"
BEST_CHECKPOINT, LAST_CHECKPOINT = "best.safetensors", "last.safetensors"


class TrainingError(RuntimeError):
    """Training cannot start (e.g. a split without both classes); the message says how to fix it."""


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_val: dict
    history: list[dict] = field(default_factory=list)
    skipped: int = 0


@dataclass
class _State:
    """What --resume restores besides weights and optimizer."""

    next_epoch: int = 0
    best_score: tuple[float, float] | None = None
    best_epoch: int = -1
    best_val: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def train(config: Config, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train ``config``; with ``resume`` (a run directory) continue after its last finished epoch."""
    seed_everything(config.seed)
    device = resolve_device(config.train.device)
    records = collect_records(config.data.sources, config.data.splits, config.seed)
    train_records, val_records = _check_splits(records)

    run_dir = Path(resume) if resume else new_run_dir(config.output_dir, config.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    write_split_csv(records, run_dir / "splits.csv")
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():
            return _run(config, device, records, train_records, val_records, run_dir, resume is not None, progress)
    finally:
        log.removeHandler(handler)
        handler.close()


def new_run_dir(output_dir: Path, name: str) -> Path:
    """``output_dir/name``, or ``name-2``, ``name-3``... if taken (never overwrite a run)."""
    candidate = output_dir / name
    for i in itertools.count(2):
        if not candidate.exists():
            return candidate
        candidate = output_dir / f"{name}-{i}"


def _check_splits(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    missing = [CLASS_NAMES[c] for c in (0, 1) if not any(r.label == c for r in train)]
    if missing:
        raise TrainingError(f"the training split has no {' or '.join(missing)} images; add a source with that label")
    if not val:
        raise TrainingError(
            "the validation split is empty, so no checkpoint could be selected; "
            "raise data.splits.val or add a source with split: val"
        )
    return train, val


def _run(config, device, records, train_records, val_records, run_dir, resuming, progress) -> TrainResult:
    tc: TrainConfig = config.train
    net = build_network(config.features, config.model).to(device)
    train_loader, val_loader = _loaders(config, train_records, val_records, device)
    train_names, val_names = [r.path for r in train_records], [r.path for r in val_records]
    steps_per_epoch = min(len(train_loader), tc.max_steps_per_epoch or len(train_loader))
    optimizer = _make_optimizer(net, tc)
    scheduler = make_scheduler(optimizer, steps_per_epoch, tc.warmup_epochs, tc.lr_decay)
    skipped = SkipLog()
    state = _State()
    data_summary = summarize(records)
    log.info("data: %s", json.dumps({s: {k: sum(v.values()) for k, v in d.items()} for s, d in data_summary.items()}))

    if resuming:
        state = _load_resume(run_dir / RESUME_FILE, net, optimizer, scheduler)
        log.info("resuming %s at epoch %d", run_dir, state.next_epoch + 1)
    else:
        mean, std, seen = measure_feature_stats(
            net, _logging_failures(train_loader, skipped, train_names, "train"), device, tc.norm_batches
        )
        net.normalize.set_stats(mean, std)
        log.info("normalization stats from %d training images: mean %s std %s", seen, _fmt(mean), _fmt(std))

    epochs = range(state.next_epoch, tc.epochs)
    for epoch in tqdm(epochs, desc="epochs", disable=not progress, initial=state.next_epoch, total=tc.epochs):
        started = time.perf_counter()
        train_stats = _train_epoch(net, _logging_failures(train_loader, skipped, train_names, "train"),
                                   optimizer, scheduler, device, tc, steps_per_epoch, progress)
        val = _validate(net, _logging_failures(val_loader, skipped, val_names, "val"), device, tc, progress)
        row = {
            "epoch": epoch + 1,
            "lr": scheduler.get_last_lr()[0],
            **{f"train_{k}": v for k, v in train_stats.items()},
            **{f"val_{k}": val[k] for k in ("loss", "accuracy", "roc_auc", "f1")},
            "seconds": round(time.perf_counter() - started, 2),
        }
        state.history.append(row)
        with (run_dir / METRICS_FILE).open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        score = _selection_score(val, tc.select_metric)
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.best_val = score, epoch + 1, val
        log.info(
            "epoch %d/%d  train loss %.4f acc %.3f | val loss %.4f acc %.3f auc %s%s",
            epoch + 1, tc.epochs, train_stats["loss"], train_stats["accuracy"], val["loss"], val["accuracy"],
            "n/a" if val["roc_auc"] is None else f"{val['roc_auc']:.3f}", "  (best)" if improved else "",
        )
        meta = _checkpoint_meta(config, net, data_summary, epoch + 1, val, len(skipped))
        save_checkpoint(run_dir / LAST_CHECKPOINT, net, meta)
        if improved:
            save_checkpoint(run_dir / BEST_CHECKPOINT, net, meta)
        state.next_epoch = epoch + 1
        _save_resume(run_dir / RESUME_FILE, net, optimizer, scheduler, state)

    skipped.write(run_dir / "skipped.csv")
    if len(skipped):
        log.warning("%s; see %s", skipped.summary(), run_dir / "skipped.csv")
    result = TrainResult(run_dir, run_dir / BEST_CHECKPOINT, state.best_epoch, state.best_val, state.history,
                         len(skipped))
    summary = {"best_epoch": result.best_epoch, "select_metric": tc.select_metric, "best_val": result.best_val,
               "skipped": result.skipped, "data": data_summary}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return result


def _loaders(config: Config, train_records, val_records, device):
    dc, tc = config.data, config.train
    train_set = ImageDataset(
        [r.path for r in train_records],
        TrainTransform(dc.crop, config.augment.hflip, config.augment.vflip),
        [r.label for r in train_records],
        dc.max_pixels,
    )
    generator = torch.Generator().manual_seed(config.seed)
    if dc.balance:
        counts = Counter(r.label for r in train_records)
        weights = torch.tensor([1.0 / counts[r.label] for r in train_records], dtype=torch.double)
        sampler = WeightedRandomSampler(weights, len(train_records), replacement=True, generator=generator)
    else:
        sampler = RandomSampler(train_set, generator=generator)
    pin = device.type == "cuda"
    train_loader = make_loader(train_set, tc.batch_size, dc.workers, sampler=sampler, pin_memory=pin,
                               persistent=True, drop_last=len(train_set) > tc.batch_size)
    val_set = ImageDataset([r.path for r in val_records], EvalTransform(dc.crop),
                           [r.label for r in val_records], dc.max_pixels)
    val_loader = make_loader(val_set, tc.batch_size, dc.workers, pin_memory=pin, persistent=True)
    return train_loader, val_loader


def _make_optimizer(net: DetectorNet, tc: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=tc.lr, weight_decay=tc.weight_decay)


def _logging_failures(loader, skipped: SkipLog, names: list[str], stage: str):
    """The loader's batches, with every file that failed to decode written to ``skipped``."""
    for batch in loader:
        skipped.add_batch_failures(batch, names, stage)
        yield batch


def _train_epoch(net, batches, optimizer, scheduler, device, tc, steps, progress) -> dict:
    net.train()
    loss_sum, correct, seen = 0.0, 0, 0
    bar = tqdm(itertools.islice(batches, steps), total=steps, desc="train", leave=False, disable=not progress)
    for batch in bar:
        if len(batch):
            images = batch.images.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            with autocast(device, tc.amp):
                logits = net(images)
            loss = F.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(batch)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.3f}")
        scheduler.step()
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1), "images": seen}


def _validate(net, batches, device, tc, progress) -> dict:
    labels, logits_all = [], []
    for batch, logits in iter_logits(net, batches, device, tc.amp, "val" if progress else None):
        labels.append(batch.labels)
        logits_all.append(logits)
    labels_t, logits_t = torch.cat(labels), torch.cat(logits_all)
    if len(labels_t) == 0:
        raise TrainingError("no validation image could be read; see skipped.csv")
    metrics = binary_metrics(labels_t.tolist(), probability_synthetic(logits_t).tolist(), tc.threshold)
    metrics["loss"] = float(F.cross_entropy(logits_t, labels_t))
    return metrics


def _selection_score(val: dict, metric: str) -> tuple[float, float]:
    """Higher is better; ties on the chosen metric go to the lower validation loss."""
    if metric == "loss":
        return (-val["loss"], 0.0)
    primary = val["roc_auc"] if metric == "auc" and val["roc_auc"] is not None else val["accuracy"]
    return (primary, -val["loss"])


def _checkpoint_meta(config: Config, net: DetectorNet, data_summary: dict, epoch: int, val: dict,
                     skipped: int) -> CheckpointMeta:
    return CheckpointMeta(
        model=ModelSpec(name=config.model.name, in_chans=net.features.out_channels, options=config.model.options),
        features=config.features,
        crop=config.data.crop,
        threshold=config.train.threshold,
        training={
            "config": config.model_dump(mode="json"),
            "data": data_summary,
            "epoch": epoch,
            "val": {k: v for k, v in val.items() if k != "confusion_matrix"},
            "skipped_files": skipped,
        },
    )


def _save_resume(path: Path, net, optimizer, scheduler, state: _State) -> None:
    payload = {
        "model": net.state_dict(),
        "normalize": {"mean": net.normalize.mean.cpu(), "std": net.normalize.std.cpu()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "state": state.__dict__,
        "rng": torch.get_rng_state(),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _load_resume(path: Path, net, optimizer, scheduler) -> _State:
    if not path.is_file():
        raise TrainingError(f"{path}: nothing to resume (no finished epoch in this run directory)")
    # Our own file from this run directory; weights_only refuses anything but tensors and containers.
    payload = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict(payload["model"])
    net.normalize.set_stats(payload["normalize"]["mean"], payload["normalize"]["std"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng"])
    return _State(**payload["state"])


def _fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in t.tolist()) + "]"
