"""Robustness sweep: re-score the test images after the degradations they meet on the way to a user.

Each perturbation is applied to the decoded image (as a re-save, resize or filter would
be), then the view the model is evaluated with is taken (its own view, or a center crop).
For a center crop only a centered region large enough for it (plus a margin for filters
and block grids) is perturbed, so huge images stay cheap.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from synthdet.data.augment import gaussian_blur, gaussian_noise, jpeg_compress, rescale
from synthdet.data.sources import ImageRecord
from synthdet.data.transforms import center_crop
from synthdet.evaluation import plots
from synthdet.evaluation.evaluate import labels_probs_logits
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.detector import Detector, PredictOptions
from synthdet.inference.views import MARGIN, center_region, needs_whole_image
from synthdet.rundir import RunDir, atomic_path, prepare_folder, write_atomic

@dataclass(frozen=True)
class Perturbation:
    kind: str  # jpeg, downscale, blur, noise, crop, or none
    level: float
    unit: str

    @property
    def label(self) -> str:
        return "clean" if self.kind == "none" else f"{self.kind} {self.level:g}"


def default_sweep() -> list[Perturbation]:
    """The issue-4 sweep: JPEG quality, downscale factor, blur and noise sigma, center-crop fraction."""
    sweep = [Perturbation("none", 0, "")]
    sweep += [Perturbation("jpeg", q, "JPEG quality") for q in (95, 90, 75, 50, 30)]
    sweep += [Perturbation("downscale", f, "scale factor") for f in (0.9, 0.75, 0.5)]
    sweep += [Perturbation("blur", s, "blur sigma (px)") for s in (0.5, 1, 2)]
    sweep += [Perturbation("noise", s, "noise sigma") for s in (0.01, 0.02, 0.05)]
    sweep += [Perturbation("crop", f, "fraction of crop") for f in (0.75, 0.5, 0.25)]
    return sweep


class Perturbed:
    """Eval transform: perturb the image, then apply ``view`` (the model's evaluation view)."""

    def __init__(self, view, perturbation: Perturbation):
        self.view = view
        self.crop = view.crop
        self.perturbation = perturbation

    @property
    def cache_key(self) -> str:
        """Clean images share the plain view's cache entries (the same pixels)."""
        if self.perturbation.kind == "none":
            return self.view.cache_key
        return f"{self.perturbation.label}>{self.view.cache_key}"

    def __call__(self, pixels: np.ndarray):
        p, (height, width) = self.perturbation, self.crop
        if p.kind == "none":
            return self.view(pixels)
        if p.kind == "crop":  # less context: a smaller center crop, padded by the usual rule
            return self.view(center_crop(pixels, max(1, round(height * p.level)), max(1, round(width * p.level))))
        if not needs_whole_image(self.view):
            grow = 1 / p.level if p.kind == "downscale" else 1.0
            pixels = center_region(pixels, math.ceil(height * grow) + 2 * MARGIN, math.ceil(width * grow) + 2 * MARGIN)
        return self.view(_apply(p, pixels))


def _apply(p: Perturbation, pixels: np.ndarray) -> np.ndarray:
    actions: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "jpeg": lambda x: jpeg_compress(x, int(p.level)),
        "downscale": lambda x: rescale(x, p.level),
        "blur": lambda x: gaussian_blur(x, p.level),
        "noise": lambda x: gaussian_noise(x, p.level, seed=0),
    }
    return actions[p.kind](pixels)


def run_robustness(detector: Detector, records: list[ImageRecord], sweep: list[Perturbation] | None = None,
                   batch_size: int = 32, workers: int = -1, progress: bool = False) -> list[dict]:
    """Accuracy and ROC-AUC of ``detector`` on ``records`` under each perturbation."""
    rows = []
    paths = [r.path for r in records]
    options = PredictOptions(batch_size=batch_size, workers=workers)
    view = detector.view_transform(PredictOptions(tiles=None if detector.meta.view else False))
    for perturbation in sweep or default_sweep():
        transform = Perturbed(view, perturbation)
        predictions = list(detector.score_items(paths, options, progress, transform=transform))
        labels, probs, logits = labels_probs_logits([(r, p) for r, p in zip(records, predictions) if p.ok])
        m = binary_metrics(labels, probs, detector.threshold, logits)
        rows.append({"perturbation": perturbation.kind, "level": perturbation.level, "unit": perturbation.unit,
                     "n": m["n"], "accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                     "mean_p_synthetic": float(np.mean(probs)) if probs else float("nan")})
    return rows


def write_robustness(rows: list[dict], out_dir: Path) -> None:
    """robustness.csv, robustness.json and robustness.png (curves) in ``out_dir``."""
    out = RunDir(prepare_folder(out_dir))
    with atomic_path(out.robustness_csv) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_atomic(out.robustness, json.dumps(rows, indent=2))
    out.best_effort("robustness figure", plots.robustness_curves, rows, out.figure("robustness"))
