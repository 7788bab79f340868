"""Robustness sweep: re-score the test images after the degradations they meet on the way to a user.

Each perturbation is applied to the decoded image (as a re-save, resize or filter would
be), then the checkpoint's usual center crop is taken. Only a centered region large enough
for the crop (plus a margin for filters and block grids) is perturbed, so huge images
stay cheap.
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
from synthdet.evaluation.evaluate import labels_and_probs
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.detector import Detector, PredictOptions
from synthdet.rundir import RunDir, atomic_path, prepare_folder, write_atomic

MARGIN = 16  # pixels of context kept around the crop for blur kernels and JPEG blocks


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


class PerturbedCrop:
    """Eval transform: perturb a centered region, then take the checkpoint's center crop."""

    def __init__(self, crop: tuple[int, int], perturbation: Perturbation):
        self.crop = crop
        self.perturbation = perturbation

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        p, (height, width) = self.perturbation, self.crop
        if p.kind == "crop":  # less context: a smaller center crop, padded by the usual rule
            return center_crop(center_crop(pixels, max(1, round(height * p.level)), max(1, round(width * p.level))),
                               height, width)
        grow = 1 / p.level if p.kind == "downscale" else 1.0
        region = _center_region(pixels, math.ceil(height * grow) + 2 * MARGIN, math.ceil(width * grow) + 2 * MARGIN)
        return center_crop(_apply(p, region), height, width)


def _center_region(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    top, left = max(0, (h - height) // 2), max(0, (w - width) // 2)
    return np.ascontiguousarray(pixels[top : top + height, left : left + width])


def _apply(p: Perturbation, pixels: np.ndarray) -> np.ndarray:
    actions: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "none": lambda x: x,
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
    for perturbation in sweep or default_sweep():
        transform = PerturbedCrop(detector.crop, perturbation)
        options = PredictOptions(tiles=False, batch_size=batch_size, workers=workers)
        predictions = list(detector.score_items(paths, options, progress, transform=transform))
        labels, probs = labels_and_probs([(r, p) for r, p in zip(records, predictions) if p.ok])
        m = binary_metrics(labels, probs, detector.threshold)
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
