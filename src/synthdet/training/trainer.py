"""Training: sources -> network -> epochs, with the checkpoint chosen on the validation split.

One loop (:class:`TrainingStage`) serves every model; what differs between supervised
training and one-class training (which images, which loss, how validation is scored)
lives in an :class:`Objective` (:class:`SupervisedObjective` here, ``OneClassObjective``
in :mod:`.one_class`). The test split is never touched here; calibration, the test
evaluation and the report follow in :mod:`synthdet.pipeline`.

Under torchrun the same loop runs in every process (see :mod:`.distributed`): the
network is wrapped in DistributedDataParallel, ``train.batch_size`` is the batch of all
processes together, and only the main process writes to the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler, WeightedRandomSampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from synthdet.checkpoint import CheckpointMeta, ModelSpec
from synthdet.config import Config, TrainConfig
from synthdet.data.decode import ImageDecodeError, check_image
from synthdet.data.labels import CLASS_NAMES
from synthdet.data.loader import Batch, ImageDataset, ShardStream, SkipLog, make_loader
from synthdet.data.shards import parse_member_ref
from synthdet.data.sources import IgnoredFiles, ImageRecord, collect_records, split_rule, summarize, write_split_csv
from synthdet.data.storage import is_url
from synthdet.data.transforms import EvalTransform, TrainTransform
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.scoring import iter_logits, log_odds, probability_synthetic
from synthdet.network import DetectorNet, build_network, check_crop_fits, save_network
from synthdet.rundir import RunDir, atomic_path, new_run_dir, write_atomic
from synthdet.runtime import autocast, resolve_device, seed_everything, training_precision
from synthdet.training import distributed
from synthdet.training.distributed import DistributedWeightedSampler
from synthdet.training.normalization import measure_feature_stats
from synthdet.training.schedule import make_scheduler

log = logging.getLogger("synthdet.train")


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


class Objective(Protocol):
    """What a kind of training decides; the epoch loop itself is :class:`TrainingStage`."""

    def train_records(self, records: list[ImageRecord]) -> list[ImageRecord]:
        """The images to train on (from the train split)."""

    def settings(self, config: Config) -> TrainConfig:
        """Optimizer, schedule and epochs for this stage."""

    def build_network(self, config: Config) -> DetectorNet: ...

    def needs_feature_stats(self) -> bool:
        """Whether normalization statistics must be measured on training images first."""

    def start(self, net: DetectorNet, batches: Iterable[Batch], device: torch.device) -> None:
        """Initialize from training data before the first epoch."""

    def begin_epoch(self) -> None: ...

    def loss(self, net: DetectorNet, images: torch.Tensor, labels: torch.Tensor, precision: str) -> torch.Tensor: ...

    def end_epoch(self, net: DetectorNet, epoch: int, images_seen: int) -> dict:
        """Epoch statistics for the metrics log."""

    def validation_loss(self, logits: torch.Tensor, labels: torch.Tensor, net: DetectorNet) -> float: ...

    def selection_score(self, val: dict, metric: str) -> tuple[float, float]:
        """Higher is better: how the best epoch is chosen."""


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
        return build_network(config.features, config.model.name, config.model.options,
                             pretrained=config.model.pretrained)

    def needs_feature_stats(self) -> bool:
        return True

    def start(self, net: DetectorNet, batches: Iterable[Batch], device: torch.device) -> None:
        """Nothing to initialize before the first epoch."""

    def begin_epoch(self) -> None:
        self._correct = 0

    def loss(self, net: DetectorNet, images: torch.Tensor, labels: torch.Tensor, precision: str) -> torch.Tensor:
        with autocast(images.device, precision):
            logits = net(images)
        self._correct += (logits.argmax(1) == labels).sum().item()
        return F.cross_entropy(logits.float(), labels)

    def end_epoch(self, net: DetectorNet, epoch: int, images_seen: int) -> dict:
        return {"accuracy": self._correct / max(images_seen, 1)}

    def validation_loss(self, logits: torch.Tensor, labels: torch.Tensor, net: DetectorNet) -> float:
        return float(F.cross_entropy(logits, labels))

    def selection_score(self, val: dict, metric: str) -> tuple[float, float]:
        """Ties on the chosen metric go to the lower validation loss."""
        if metric == "loss":
            return (-val["loss"], 0.0)
        primary = val["roc_auc"] if metric == "auc" and val["roc_auc"] is not None else val["accuracy"]
        return (primary, -val["loss"])


@dataclass
class _Progress:
    """What --resume restores besides weights and optimizer."""

    next_epoch: int = 0
    best_score: tuple[float, float] | None = None
    best_epoch: int = -1
    best_val: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)


def run_stage(config: Config, objective: Objective, resume: str | Path | None = None, progress: bool = True,
              run_dir: RunDir | None = None, records: list[ImageRecord] | None = None) -> TrainResult:
    """One training stage written to a run directory (``resume``: continue that run).

    ``records`` replaces the images the config's sources would give (protocols train on
    subsets); its train and val splits are used, anything in test is left alone.
    Under torchrun the main process lists the images and names the run for all.
    """
    here = distributed.world()
    seed_everything(config.seed + here.rank)  # distinct augmentations; DDP copies the main process's weights
    main = here.is_main
    ignored = IgnoredFiles()
    split_rules = {}  # given records were split by their caller (a protocol)
    if records is None:
        records = distributed.broadcast(
            collect_records(config.data.sources, config.data.splits, config.seed, ignored) if main else None)
        split_rules = {s.display_name: split_rule(s, config.data.splits) for s in config.data.sources}
    run = RunDir(resume) if resume else run_dir or new_run_dir(config.output_dir, config.name)
    run = RunDir(distributed.broadcast(run.root))
    stage = TrainingStage(config, objective, run, records, resuming=resume is not None, progress=progress and main,
                          ignored=ignored, split_rules=split_rules)
    if not main:
        log.setLevel(logging.WARNING)  # the main process speaks for all
        return stage.run()
    handler = logging.FileHandler(run.log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        with logging_redirect_tqdm():
            return stage.run()
    finally:
        log.removeHandler(handler)
        handler.close()


class TrainingStage:
    """Network, loaders, optimizer and schedule of one stage, and its epoch loop."""

    def __init__(self, config: Config, objective: Objective, run: RunDir, records: list[ImageRecord],
                 resuming: bool, progress: bool, ignored: IgnoredFiles | None = None,
                 split_rules: dict[str, str] | None = None):
        self.config, self.objective, self.run_dir = config, objective, run
        self.settings: TrainConfig = objective.settings(config)
        self.world = distributed.world()
        if self.settings.batch_size % self.world.size:
            raise TrainingError(f"train.batch_size {self.settings.batch_size} is the batch of all processes together; "
                                f"make it a multiple of the {self.world.size} processes")
        self.device = distributed.process_device(resolve_device(config.train.device))
        self.precision = training_precision(self.settings.amp, self.device)
        self.records = records
        self.ignored = ignored or IgnoredFiles()
        self.skipped = SkipLog()
        if self.world.is_main:  # headers are read once, and the verdicts shared with the other processes
            _check_headers([r for r in records if r.split in ("train", "val")], config.data.max_pixels, self.skipped)
        unusable = distributed.broadcast(set(self.skipped.entries))
        usable = [r for r in records if r.split in ("train", "val") and r.path not in unusable]
        self.train_records = objective.train_records(usable)
        self.val_records = [r for r in usable if r.split == "val"]
        if not self.val_records:
            raise TrainingError(
                "the validation split is empty, so no checkpoint could be selected; "
                "raise data.splits.val or add a source with split: val"
            )
        net = objective.build_network(config)
        check_crop_fits(net, config.data.crop, config.model.name)
        self.net = net.to(self.device)
        # what the loss runs through: under torchrun, DDP averages gradients between processes
        self.model = net if self.world.size == 1 else DistributedDataParallel(
            net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.resuming, self.progress = resuming, progress
        if self.world.is_main:
            run.prepare()
            write_atomic(run.config, config.to_yaml())
            write_split_csv(records, run.splits)
        self.train_loader, self.val_loader = self._loaders()
        self._stream = None  # the one endless iterator over a ShardStream
        if self.train_sampler is not None:
            steps = len(self.train_loader)
        else:
            steps = max(1, len(self.train_records) // self.settings.batch_size)
        self.steps_per_epoch = min(steps, self.settings.max_steps_per_epoch or steps)
        self.optimizer = _make_optimizer(self.net, self.settings)
        self.scheduler = make_scheduler(self.optimizer, self.steps_per_epoch, self.settings.warmup_epochs,
                                        self.settings.lr_decay)
        self.data_summary = summarize(records)
        self.split_rules = split_rules or {}

    def run(self) -> TrainResult:
        tc, net = self.settings, self.net
        log.info("data: %s", json.dumps({s: {k: sum(v.values()) for k, v in d.items()}
                                         for s, d in self.data_summary.items()}))
        if self.ignored.total:
            log.info("scanning the source folders %s", self.ignored)
        if len(self.skipped):
            log.warning("%d training or validation file(s) unusable from their header alone; see %s",
                        len(self.skipped), self.run_dir.skipped)
        for source, rule in self.split_rules.items():
            log.info("splits of %s: %s", source, rule)
        if self.resuming:
            state = self._load_resume()
            log.info("resuming %s at epoch %d", self.run_dir.root, state.next_epoch + 1)
        else:
            state = _Progress()
            if self.objective.needs_feature_stats():
                mean, std, seen = distributed.broadcast(
                    measure_feature_stats(net, self._train_batches(), self.device, tc.norm_batches * self.world.size)
                    if self.world.is_main else None)  # as many images as one process's batches would hold
                net.normalize.set_stats(mean, std)
                log.info("normalization stats from %d training images: mean %s std %s", seen, _fmt(mean), _fmt(std))
            self.objective.start(net, self._train_batches(), self.device)

        epochs = range(state.next_epoch, tc.epochs)
        for epoch in tqdm(epochs, desc="epochs", disable=not self.progress, initial=state.next_epoch,
                          total=tc.epochs):
            self._epoch(epoch, state)

        for entries in distributed.gather(self.skipped.entries)[1:]:
            for path, (reason, stage) in entries.items():
                self.skipped.add(path, reason, stage)
        result = TrainResult(self.run_dir.root, self.run_dir.best, state.best_epoch, state.best_val, state.history,
                             len(self.skipped))
        if self.world.is_main:
            self.skipped.write(self.run_dir.skipped)
            if len(self.skipped):
                log.warning("%s; see %s", self.skipped.summary(), self.run_dir.skipped)
            summary = {"best_epoch": result.best_epoch, "select_metric": tc.select_metric,
                       "best_val": result.best_val, "skipped": result.skipped, "ignored": self.ignored.to_dict(),
                       "data": self.data_summary, "split_rules": self.split_rules}
            write_atomic(self.run_dir.summary, json.dumps(summary, indent=2))
        return result

    def _epoch(self, epoch: int, state: _Progress) -> None:
        tc = self.settings
        started = time.perf_counter()
        train_stats = self._train_epoch(epoch)
        train_stats["seconds"] = round(time.perf_counter() - started, 2)
        distributed.at(f"epoch {epoch + 1}, validation")
        val = self._validate()
        row = {
            "epoch": epoch + 1,
            "lr": self.scheduler.get_last_lr()[0],
            **{f"train_{k}": v for k, v in train_stats.items()},
            **{f"val_{k}": val[k] for k in ("loss", "accuracy", "roc_auc", "f1")},
            "seconds": round(time.perf_counter() - started, 2),
        }
        state.history.append(row)
        score = self.objective.selection_score(val, tc.select_metric)
        improved = state.best_score is None or score > state.best_score
        if improved:
            state.best_score, state.best_epoch, state.best_val = score, epoch + 1, val
        state.next_epoch = epoch + 1
        if not self.world.is_main:
            return
        log.info(
            "epoch %d/%d  train loss %.4f | val loss %.4f acc %.3f auc %s%s",
            epoch + 1, tc.epochs, train_stats["loss"], val["loss"], val["accuracy"],
            "n/a" if val["roc_auc"] is None else f"{val['roc_auc']:.3f}", "  (best)" if improved else "",
        )
        # Checkpoints first, then the metrics line: metrics.jsonl never lists an epoch whose
        # checkpoint failed to write (a full disk ends the run here, with one clear error).
        meta = self._checkpoint_meta(epoch + 1, val)
        save_network(self.run_dir.last, self.net, meta)
        if improved:
            save_network(self.run_dir.best, self.net, meta)
        self._save_resume(state)
        write_atomic(self.run_dir.metrics_log, "".join(json.dumps(h) + "\n" for h in state.history))

    def _loaders(self):
        """Each process loads its share of the batch: its part of every epoch, and of the validation split.

        Training images that all sit in tar shards are streamed shard by shard
        (:class:`ShardStream`); otherwise a sampler picks them one by one.
        """
        dc, tc, here = self.config.data, self.settings, self.world
        batch_size, workers = tc.batch_size // here.size, distributed.workers_per_process(dc.workers)
        paths, labels = [r.path for r in self.train_records], [r.label for r in self.train_records]
        transform, pin = TrainTransform(dc.crop, self.config.augment), self.device.type == "cuda"
        if all(parse_member_ref(p) for p in paths):
            self.train_sampler = None
            train_set = ShardStream(paths, labels, transform, dc.max_pixels, dc.balance, self.config.seed, here.rank,
                                    here.size)
            train_loader = make_loader(train_set, batch_size, workers, pin_memory=pin, persistent=True)
        else:
            train_set = ImageDataset(paths, transform, labels, dc.max_pixels)
            self.train_sampler = self._train_sampler(train_set)
            train_loader = make_loader(train_set, batch_size, workers, sampler=self.train_sampler, pin_memory=pin,
                                       persistent=True, drop_last=len(train_set) > tc.batch_size)
        val_set = ImageDataset([r.path for r in self.val_records], EvalTransform(dc.crop),
                               [r.label for r in self.val_records], dc.max_pixels)
        val_part = None if here.size == 1 else range(here.rank, len(val_set), here.size)
        val_loader = make_loader(val_set, batch_size, workers, sampler=val_part, pin_memory=pin, persistent=True)
        return train_loader, val_loader

    def _train_sampler(self, train_set: ImageDataset):
        """Class-balanced draws with replacement (``data.balance``), or a shuffle; split between processes."""
        here, seed = self.world, self.config.seed
        counts = Counter(r.label for r in self.train_records)
        if self.config.data.balance and len(counts) > 1:
            weights = torch.tensor([1.0 / counts[r.label] for r in self.train_records], dtype=torch.double)
            if here.size > 1:
                return DistributedWeightedSampler(weights, len(train_set), here.rank, here.size, seed)
            generator = torch.Generator().manual_seed(seed)
            return WeightedRandomSampler(weights, len(train_set), replacement=True, generator=generator)
        if here.size > 1:
            return DistributedSampler(train_set, here.size, here.rank, shuffle=True, seed=seed)
        return RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))

    def _train_batches(self) -> Iterator[Batch]:
        batches = self.train_loader
        if self.train_sampler is None:  # a shard stream never ends: an epoch is a number of steps
            if self._stream is None:
                self._stream = iter(self.train_loader)
            batches = self._stream
        return _logging_failures(batches, self.skipped, [r.path for r in self.train_records], "train")

    def _train_epoch(self, epoch: int) -> dict:
        net, device = self.net, self.device
        net.train()
        if hasattr(self.train_sampler, "set_epoch"):
            self.train_sampler.set_epoch(epoch)
        self.objective.begin_epoch()
        loss_sum, seen = 0.0, 0
        batches = self._train_batches()
        bar = tqdm(range(self.steps_per_epoch), desc="train", leave=False, disable=not self.progress)
        for step in bar:
            distributed.at(f"epoch {epoch + 1}, training step {step + 1} of {self.steps_per_epoch}")
            batch = next(batches, None)
            # a step needs every process: one whose batch failed to decode makes all skip it
            if distributed.everyone(batch is not None and len(batch) > 0):
                images = batch.images.to(device, non_blocking=True)
                labels = batch.labels.to(device, non_blocking=True)
                loss = self.objective.loss(self.model, images, labels, self.precision)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                loss_sum += loss.item() * len(batch)
                seen += len(batch)
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}")
            self.scheduler.step()
        stats = distributed.mean_across(self.objective.end_epoch(net, epoch, seen), seen)
        loss_sum, seen = distributed.sum_across(loss_sum, seen)
        return {"loss": loss_sum / max(seen, 1), "images": int(seen), **stats}

    def _validate(self) -> dict:
        distributed.sync_buffers(self.net)  # every process scores with the main process's (saved) network
        batches = _logging_failures(self.val_loader, self.skipped, [r.path for r in self.val_records], "val")
        labels, logits_all = [], []
        for batch, logits in iter_logits(self.net, batches, self.device, self.precision,
                                         "val" if self.progress else None):
            labels.append(batch.labels)
            logits_all.append(logits)
        # every process scored its part; AUC needs them all, so all processes compute it on all
        mine = (torch.cat(labels), torch.cat(logits_all)) if labels else (torch.empty(0, dtype=torch.long),
                                                                           torch.empty(0, 2))
        parts = distributed.gather(mine)
        labels_t, logits_t = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if len(labels_t) == 0:
            raise TrainingError("no validation image could be read; see skipped.csv")
        metrics = binary_metrics(labels_t.tolist(), probability_synthetic(logits_t).tolist(),
                                 self.config.train.threshold, log_odds(logits_t).tolist())
        metrics["loss"] = self.objective.validation_loss(logits_t, labels_t, self.net)
        return metrics

    def _checkpoint_meta(self, epoch: int, val: dict) -> CheckpointMeta:
        config = self.config
        return CheckpointMeta(
            model=ModelSpec(name=config.model.name, in_chans=self.net.features.out_channels,
                            options=config.model.options),
            features=config.features,
            crop=config.data.crop,
            threshold=config.train.threshold,
            training={
                "config": config.model_dump(mode="json"),
                "data": self.data_summary,
                "epoch": epoch,
                "val": {k: v for k, v in val.items() if k != "confusion_matrix"},
                "skipped_files": len(self.skipped),
            },
        )

    def _save_resume(self, state: _Progress) -> None:
        payload = {
            "model": self.net.state_dict(),
            "normalize": {"mean": self.net.normalize.mean.cpu(), "std": self.net.normalize.std.cpu()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": state.__dict__,
            "rng": torch.get_rng_state(),
        }
        with atomic_path(self.run_dir.resume) as tmp:
            torch.save(payload, tmp)

    def _load_resume(self) -> _Progress:
        path = self.run_dir.resume
        if not path.is_file():
            raise TrainingError(f"{path}: nothing to resume (no finished epoch in this run directory)")
        # Our own file from this run directory; weights_only refuses anything but tensors and containers.
        payload = torch.load(path, map_location="cpu", weights_only=True)
        self.net.load_state_dict(payload["model"])
        self.net.normalize.set_stats(payload["normalize"]["mean"], payload["normalize"]["std"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        if self.world.is_main:  # the main process's random state; the others keep their own seeds
            torch.set_rng_state(payload["rng"])
        return _Progress(**payload["state"])


def _make_optimizer(net: DetectorNet, tc: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in net.parameters() if p.requires_grad]
    if tc.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tc.lr, momentum=tc.momentum, weight_decay=tc.weight_decay)
    cls = torch.optim.AdamW if tc.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=tc.lr, weight_decay=tc.weight_decay)


def _check_headers(records: list[ImageRecord], max_pixels: int, skipped: SkipLog) -> None:
    """Add the local files that fail decoding's header checks to ``skipped`` (stage "check").

    No pixel is decoded, so this is cheap, and it lists unreadable files that the sampler
    would never have drawn. Data corrupt beyond a sound header is found when a file is read;
    so are shard members and URLs, whose headers would cost a pass over remote or sharded data.
    """
    for record in records:
        if parse_member_ref(record.path) or is_url(record.path):
            continue
        try:
            check_image(record.path, max_pixels)
        except ImageDecodeError as exc:
            skipped.add(record.path, exc.reason, "check")


def _logging_failures(loader, skipped: SkipLog, names: list[str], stage: str) -> Iterator[Batch]:
    """The loader's batches, with every file that failed to decode written to ``skipped``."""
    for batch in loader:
        skipped.add_batch_failures(batch, names, stage)
        yield batch


def _fmt(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in t.tolist()) + "]"
