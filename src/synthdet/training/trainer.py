"""Training: sources -> network -> epochs, with the checkpoint chosen on the validation split.

One loop serves every model; what differs between supervised training and one-class
training (which images, which loss, how validation is scored) lives in an *objective*
(:class:`SupervisedObjective` here, ``OneClassObjective`` in :mod:`.one_class`). The test
split is never touched here; it exists for ``synthdet evaluate``.
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
from synthdet.data.sources import ImageRecord, collect_records, read_split_csv, summarize, write_split_csv
from synthdet.data.transforms import EvalTransform, TrainTransform
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.scoring import iter_logits, probability_synthetic
from synthdet.models import DetectorNet, build_network, check_crop_fits, model_entry
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


class SupervisedObjective:
    """Cross-entropy on both classes; best epoch by ``train.select_metric`` on validation."""

    def train_records(self, records: list[ImageRecord]) -> list[ImageRecord]:
        train = [r for r in records if r.split == "train"]
        missing = [CLASS_NAMES[c] for c in (0, 1) if not any(r.label == c for r in train)]
        if missing:
            raise TrainingError(
                f"the training split has no {' or '.join(missing)} images; add a source with that label"
            )
        return train

    def settings(self, config: Config) -> TrainConfig:
        return config.train

    def build_network(self, config: Config) -> DetectorNet:
        return build_network(config.features, config.model)

    def needs_feature_stats(self) -> bool:
        return True

    def start(self, net: DetectorNet, batches, device: torch.device) -> None:
        """Nothing to initialize before the first epoch."""

    def loss(self, net: DetectorNet, images: torch.Tensor, labels: torch.Tensor, amp: bool) -> torch.Tensor:
        with autocast(images.device, amp):
            logits = net(images)
        self._correct += (logits.argmax(1) == labels).sum().item()
        return F.cross_entropy(logits.float(), labels)

    def begin_epoch(self) -> None:
        self._correct = 0

    def end_epoch(self, net: DetectorNet, epoch: int, images_seen: int) -> dict:
        return {"accuracy": self._correct / max(images_seen, 1)}

    def validation_loss(self, logits: torch.Tensor, labels: torch.Tensor, net: DetectorNet) -> float:
        return float(F.cross_entropy(logits, labels))

    def selection_score(self, val: dict, metric: str) -> tuple[float, float]:
        """Higher is better; ties on the chosen metric go to the lower validation loss."""
        if metric == "loss":
            return (-val["loss"], 0.0)
        primary = val["roc_auc"] if metric == "auc" and val["roc_auc"] is not None else val["accuracy"]
        return (primary, -val["loss"])


def train(config: Config, resume: str | Path | None = None, progress: bool = True,
          records: list[ImageRecord] | None = None) -> TrainResult:
    """Train ``config``; with ``resume`` (a run directory) continue after its last finished epoch.

    ``records`` replaces the images the config's sources would give (protocols train on
    subsets); its train and val splits are used, anything in test is left alone.
    """
    if model_entry(config.model.name).one_class:
        from synthdet.training.one_class import train_one_class

        result = train_one_class(config, resume, progress, records)
    else:
        result = run_stage(config, SupervisedObjective(), resume, progress, records=records)
    _finish(result, config)
    return result


def _finish(result: TrainResult, config: Config) -> None:
    """Calibrate the best checkpoint on the validation split; draw the training curves."""
    from synthdet.evaluation.calibration import calibrate_checkpoint
    from synthdet.evaluation.plots import training_curves

    val = read_split_csv(result.run_dir / "splits.csv", "val")
    calibration = calibrate_checkpoint(result.best_checkpoint, val, config.train.target_fpr, result.run_dir,
                                       config.train.device, config.data.workers)
    log.info("calibrated on %d validation images: temperature %.3g, threshold %.3g, NLL %.4f -> %.4f "
             "(the fitted objective), ECE %.4f -> %.4f", calibration.n, calibration.temperature,
             calibration.threshold, calibration.nll_before, calibration.nll_after, calibration.ece_before,
             calibration.ece_after)
    if result.history:
        training_curves(result.history, result.run_dir / "curves.png")


def run_stage(config: Config, objective, resume: str | Path | None = None, progress: bool = True,
              run_dir: Path | None = None, records: list[ImageRecord] | None = None) -> TrainResult:
    """One training stage: data, network and epochs, written to a run directory."""
    seed_everything(config.seed)
    device = resolve_device(config.train.device)
    if records is None:
        records = collect_records(config.data.sources, config.data.splits, config.seed)
    train_records = objective.train_records(records)
    val_records = [r for r in records if r.split == "val"]
    if not val_records:
        raise TrainingError(
            "the validation split is empty, so no checkpoint could be selected; "
            "raise data.splits.val or add a source with split: val"
        )
    net = objective.build_network(config)
    check_crop_fits(net, config.data.crop, config.model.name)
    run_dir = Path(resume) if resume else run_dir or new_run_dir(config.output_dir, config.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(config.to_yaml())
    write_split_csv(records, run_dir / "splits.csv")
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():
            return _run(config, objective, net.to(device), device, records, train_records, val_records, run_dir,
                        resume is not None, progress)
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


def _run(config, objective, net, device, records, train_records, val_records, run_dir, resuming, progress):
    tc: TrainConfig = objective.settings(config)
    train_loader, val_loader = _loaders(config, tc, train_records, val_records, device)
    train_names, val_names = [r.path for r in train_records], [r.path for r in val_records]
    steps_per_epoch = min(len(train_loader), tc.max_steps_per_epoch or len(train_loader))
    optimizer = _make_optimizer(net, tc)
    scheduler = make_scheduler(optimizer, steps_per_epoch, tc.warmup_epochs, tc.lr_decay)
    skipped = SkipLog()
    state = _State()
    data_summary = summarize(records)
    log.info("data: %s", json.dumps({s: {k: sum(v.values()) for k, v in d.items()} for s, d in data_summary.items()}))

    def train_batches():
        return _logging_failures(train_loader, skipped, train_names, "train")

    if resuming:
        state = _load_resume(run_dir / RESUME_FILE, net, optimizer, scheduler)
        log.info("resuming %s at epoch %d", run_dir, state.next_epoch + 1)
    else:
        if objective.needs_feature_stats():
            mean, std, seen = measure_feature_stats(net, train_batches(), device, tc.norm_batches)
            net.normalize.set_stats(mean, std)
            log.info("normalization stats from %d training images: mean %s std %s", seen, _fmt(mean), _fmt(std))
        objective.start(net, train_batches(), device)

    epochs = range(state.next_epoch, tc.epochs)
    for epoch in tqdm(epochs, desc="epochs", disable=not progress, initial=state.next_epoch, total=tc.epochs):
        started = time.perf_counter()
        train_stats = _train_epoch(net, objective, train_batches(), optimizer, scheduler, device, tc,
                                   steps_per_epoch, progress)
        train_stats["seconds"] = round(time.perf_counter() - started, 2)
        train_stats.update(objective.end_epoch(net, epoch, train_stats["images"]))
        val = _validate(net, objective, _logging_failures(val_loader, skipped, val_names, "val"), device, tc,
                        progress)
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
        score = objective.selection_score(val, tc.select_metric)
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.best_val = score, epoch + 1, val
        log.info(
            "epoch %d/%d  train loss %.4f | val loss %.4f acc %.3f auc %s%s",
            epoch + 1, tc.epochs, train_stats["loss"], val["loss"], val["accuracy"],
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


def _loaders(config: Config, tc: TrainConfig, train_records, val_records, device):
    dc = config.data
    train_set = ImageDataset(
        [r.path for r in train_records],
        TrainTransform(dc.crop, config.augment),
        [r.label for r in train_records],
        dc.max_pixels,
    )
    generator = torch.Generator().manual_seed(config.seed)
    counts = Counter(r.label for r in train_records)
    if dc.balance and len(counts) > 1:
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


def _train_epoch(net, objective, batches, optimizer, scheduler, device, tc, steps, progress) -> dict:
    net.train()
    objective.begin_epoch()
    loss_sum, seen = 0.0, 0
    bar = tqdm(itertools.islice(batches, steps), total=steps, desc="train", leave=False, disable=not progress)
    for batch in bar:
        if len(batch):
            images = batch.images.to(device, non_blocking=True)
            labels = batch.labels.to(device, non_blocking=True)
            loss = objective.loss(net, images, labels, tc.amp)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
        scheduler.step()
    return {"loss": loss_sum / max(seen, 1), "images": seen}


def _validate(net, objective, batches, device, tc, progress) -> dict:
    labels, logits_all = [], []
    for batch, logits in iter_logits(net, batches, device, tc.amp, "val" if progress else None):
        labels.append(batch.labels)
        logits_all.append(logits)
    labels_t, logits_t = torch.cat(labels), torch.cat(logits_all)
    if len(labels_t) == 0:
        raise TrainingError("no validation image could be read; see skipped.csv")
    metrics = binary_metrics(labels_t.tolist(), probability_synthetic(logits_t).tolist(), tc.threshold)
    metrics["loss"] = objective.validation_loss(logits_t, labels_t, net)
    return metrics


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
