"""One-class training (deep_svdd / flow_svdd): an embedding, then a hypersphere around real images.

Stage 1 trains the embedding network (``model.options.backbone``) supervised, with the
same data and features, unless ``model.pretrained`` already names a trained checkpoint.
Stage 2 freezes it and trains the head on real training images only with the
soft-boundary SVDD objective (Ruff et al. 2018)::

    R^2 + 1 / (nu * n) * sum_i max(0, ||f(x_i) - c||^2 - R^2)

with the centre c fixed to the mean head output before the first epoch and R set every
``one_class.radius_every`` epochs to the (1 - nu) quantile of the training distances.
Validation selects the epoch on the same objective over *real* validation images, so no
synthetic label influences the model; ROC-AUC on the full validation split is reported.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthdet.checkpoint import CheckpointError, read_metadata
from synthdet.config import Config, ModelConfig, TrainConfig
from synthdet.data.labels import REAL
from synthdet.data.sources import ImageRecord
from synthdet.network import DetectorNet, build_network
from synthdet.rundir import RunDir, new_run_dir
from synthdet.runtime import autocast
from synthdet.training.distributed import world
from synthdet.training.trainer import SupervisedObjective, TrainingError, TrainResult, run_stage


def train_one_class(config: Config, resume: str | Path | None, progress: bool,
                    records: list[ImageRecord] | None = None) -> TrainResult:
    if world().size > 1:
        raise TrainingError(f"one-class models ({config.model.name}) train in one process: their loss reads the "
                            f"embedding outside the DDP forward pass; run without torchrun or --nproc")
    run_dir = RunDir(resume) if resume else new_run_dir(config.output_dir, config.name)
    embedding = config.model.pretrained
    if embedding is None:
        embedding = _train_embedding(config, run_dir, resume is not None, progress, records)
    stage_resume = run_dir.root if resume and run_dir.resume.is_file() else None
    return run_stage(config, OneClassObjective(embedding, config), stage_resume, progress, run_dir=run_dir,
                     records=records)


def _train_embedding(config: Config, run_dir: RunDir, resuming: bool, progress: bool,
                     records: list[ImageRecord] | None) -> Path:
    """Stage 1: the backbone trained supervised; its best checkpoint becomes the embedding."""
    options = config.model.options
    stage1 = config.model_copy(deep=True)
    stage1.model = ModelConfig(name=options.get("backbone", "resnet18"), options=options.get("backbone_options", {}))
    stage1_dir = run_dir.stage1
    resume = stage1_dir.root if resuming and stage1_dir.resume.is_file() else None
    result = run_stage(stage1, SupervisedObjective(), resume, progress, run_dir=stage1_dir, records=records)
    return result.best_checkpoint


class OneClassObjective:
    def __init__(self, embedding: Path, config: Config):
        self.embedding = Path(embedding)
        self.nu = config.one_class.nu
        self.radius_every = config.one_class.radius_every
        try:
            self.embedding_meta = read_metadata(self.embedding)
        except CheckpointError:
            self.embedding_meta = None  # plain weights file: stats are measured on the real training images
        if self.embedding_meta is not None and self.embedding_meta.features != config.features:
            raise TrainingError(
                f"{self.embedding} was trained on features {self.embedding_meta.features.model_dump()}, but this "
                f"config asks for {config.features.model_dump()}; use the same features section"
            )
        self._distances: list[torch.Tensor] = []

    def train_records(self, records: list[ImageRecord]) -> list[ImageRecord]:
        real = [r for r in records if r.split == "train" and r.label == REAL]
        if not real:
            raise TrainingError("a one-class model trains on real images, and the training split has none")
        return real

    def settings(self, config: Config) -> TrainConfig:
        oc = config.one_class
        return config.train.model_copy(update={
            "epochs": oc.epochs, "lr": oc.lr, "weight_decay": oc.weight_decay, "optimizer": "adam",
            "warmup_epochs": 0.0, "lr_decay": 1.0,
        })

    def build_network(self, config: Config) -> DetectorNet:
        """The frozen embedding with the features and normalization it was trained with."""
        normalization = self.embedding_meta.normalization if self.embedding_meta is not None else None
        return build_network(config.features, config.model.name, config.model.options, pretrained=self.embedding,
                             normalization=normalization)

    def needs_feature_stats(self) -> bool:
        return self.embedding_meta is None

    def start(self, net: DetectorNet, batches, device: torch.device) -> None:
        """Fix the centre c as the mean head output over the real training images."""
        total, count = None, 0
        net.eval()
        with torch.inference_mode():
            for batch in batches:
                if len(batch):
                    z = net.backbone.forward_features(net.inputs(batch.images.to(device))).double()
                    total = z.sum(0) if total is None else total + z.sum(0)
                    count += len(z)
        if not count:
            raise TrainingError("no readable real training image to place the hypersphere centre")
        center = (total / count).float()
        # A coordinate at exactly 0 could be matched trivially by a zero weight (Ruff et al.).
        center[(center.abs() < 0.1) & (center < 0)] = -0.1
        center[(center.abs() < 0.1) & (center >= 0)] = 0.1
        net.backbone.center.copy_(center)

    def begin_epoch(self) -> None:
        self._distances = []

    def loss(self, net: DetectorNet, images: torch.Tensor, labels: torch.Tensor, precision: str) -> torch.Tensor:
        with autocast(images.device, precision):
            d2 = net.backbone.distance2(net.inputs(images)).float()
        self._distances.append(d2.detach().cpu())
        r2 = net.backbone.radius2
        return r2 + torch.relu(d2 - r2).mean() / self.nu

    def end_epoch(self, net: DetectorNet, epoch: int, images_seen: int) -> dict:
        """Move R to the (1 - nu) distance quantile every k epochs; set the logit scale."""
        d2 = torch.cat(self._distances)
        if (epoch + 1) % self.radius_every == 0:
            net.backbone.radius2.fill_(torch.quantile(d2, 1 - self.nu).item())
        net.backbone.scale.fill_(max(d2.std().item(), 1e-6))
        return {"mean_distance2": d2.mean().item(), "radius2": net.backbone.radius2.item()}

    def validation_loss(self, logits: torch.Tensor, labels: torch.Tensor, net: DetectorNet) -> float:
        """The SVDD objective on real validation images."""
        oc = net.backbone
        d2 = oc.distance2_from_logits(logits[labels == REAL])
        if len(d2) == 0:
            raise TrainingError("the validation split has no real images to select a one-class model on")
        return float(oc.radius2 + torch.relu(d2 - oc.radius2).mean() / self.nu)

    def selection_score(self, val: dict, metric: str) -> tuple[float, float]:
        return (-val["loss"], 0.0)
