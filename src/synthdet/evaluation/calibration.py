"""Calibrated probabilities and decision thresholds, fitted on the validation split.

Temperature scaling (Guo et al. 2017) divides the logits by one scalar T chosen to
minimize validation negative log-likelihood: it changes how confident the probabilities
are, never which class wins at 0.5. Expected calibration error (ECE) measures the gap
between confidence and accuracy over 15 equal-width confidence bins.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import minimize_scalar

from synthdet.checkpoint import rewrite_metadata
from synthdet.evaluation.plots import reliability_diagram
from synthdet.inference.detector import Detector
from synthdet.inference.scoring import probability_synthetic
from synthdet.rundir import RunDir, prepare_folder, write_atomic

ECE_BINS = 15
#: Temperatures are searched in [1/20, 100]; a fit at the lower bound means the validation
#: split is separated perfectly, so it cannot tell how confident the model should be.
TEMPERATURE_BOUNDS = (0.05, 100.0)


def expected_calibration_error(labels, probs, bins: int = ECE_BINS) -> float:
    """ECE of binary predictions: confidence max(p, 1 - p) against accuracy, per bin, weighted."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    if len(y) == 0:
        return float("nan")
    confidence = np.maximum(p, 1 - p)
    correct = ((p >= 0.5).astype(int) == y).astype(float)
    edges = np.linspace(0.5, 1.0, bins + 1)  # binary confidence never drops below 0.5
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def negative_log_likelihood(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """T minimizing validation NLL (searched on log T within ``TEMPERATURE_BOUNDS``)."""
    low, high = (math.log(b) for b in TEMPERATURE_BOUNDS)
    best = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
                           bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(best.x))


def threshold_for_fpr(labels, probs, target_fpr: float) -> float:
    """Smallest threshold whose false-positive rate on the real images is at most ``target_fpr``.

    A real image counts as a false positive when its P(synthetic) >= threshold, so the
    threshold is placed just above (1e-6, well over float32 rounding) the k-th highest real
    score, k = floor(target * n_real), and below 1 (a checkpoint's threshold lies in (0, 1)).
    """
    y = np.asarray(labels, dtype=int)
    real = np.sort(np.asarray(probs, dtype=float)[y == 0])[::-1]
    if len(real) == 0:
        raise ValueError("no real images to set a false-positive rate on")
    allowed = int(math.floor(target_fpr * len(real)))
    if allowed >= len(real):
        return 0.0
    return float(min(real[allowed] + 1e-6, math.nextafter(1.0, 0.0)))


@dataclass
class Calibration:
    temperature: float
    threshold: float
    n: int
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    target_fpr: float | None = None
    val_fpr: float | None = None  # at the chosen threshold, on the calibration images
    val_tpr: float | None = None
    at_bound: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate(logits: torch.Tensor, labels: torch.Tensor, target_fpr: float | None = None,
              default_threshold: float = 0.5) -> Calibration:
    """Fit T on (validation) logits; pick the threshold for ``target_fpr`` if given.

    A fit at a search bound means the validation split cannot say how confident the model
    should be (perfectly separated: NLL falls all the way to T -> 0); T then stays 1
    rather than sharpening probabilities on no evidence.
    """
    logits, labels = logits.float(), labels.long()
    temperature = fit_temperature(logits, labels)
    at_bound = any(abs(math.log(temperature) - math.log(b)) < 1e-3 for b in TEMPERATURE_BOUNDS)
    if at_bound:
        temperature = 1.0
    before = probability_synthetic(logits.double()).numpy()
    after = probability_synthetic(logits.double(), temperature).numpy()
    y = labels.numpy()
    threshold = default_threshold if target_fpr is None else threshold_for_fpr(y, after, target_fpr)
    predicted = after >= threshold
    real, synthetic = y == 0, y == 1
    return Calibration(
        temperature=temperature,
        threshold=threshold,
        n=len(y),
        ece_before=expected_calibration_error(y, before),
        ece_after=expected_calibration_error(y, after),
        nll_before=negative_log_likelihood(logits, labels, 1.0),
        nll_after=negative_log_likelihood(logits, labels, temperature),
        target_fpr=target_fpr,
        val_fpr=float(predicted[real].mean()) if real.any() else None,
        val_tpr=float(predicted[synthetic].mean()) if synthetic.any() else None,
        at_bound=at_bound,
    )


def calibrate_checkpoint(checkpoint: Path, records, target_fpr: float | None = None, out_dir: Path | None = None,
                         device: str = "auto", workers: int = -1) -> Calibration:
    """Fit temperature (and threshold) of ``checkpoint`` on ``records`` and store them in it.

    Writes ``calibration.json`` and ``reliability.png`` to ``out_dir`` when given.
    """
    detector = Detector.load(checkpoint, device)
    logits, labels = [], []
    for batch, batch_logits in detector.iter_batches([r.path for r in records], workers=workers):
        logits.append(batch_logits)
        labels.append(torch.tensor([records[i].label for i in batch.indices.tolist()], dtype=torch.long))
    logits_t, labels_t = torch.cat(logits), torch.cat(labels)
    if len(labels_t) == 0:
        raise ValueError("no readable image to calibrate on")
    configured = detector.meta.training.get("config", {}).get("train", {}).get("threshold", 0.5)
    result = calibrate(logits_t, labels_t, target_fpr, default_threshold=configured)
    meta = detector.meta.model_copy(update={"temperature": result.temperature, "threshold": result.threshold,
                                            "calibration": result.to_dict()})
    rewrite_metadata(checkpoint, meta)
    if out_dir is not None:
        out = RunDir(prepare_folder(out_dir))
        write_atomic(out.calibration, json.dumps(result.to_dict(), indent=2))
        before = probability_synthetic(logits_t).numpy()
        after = probability_synthetic(logits_t, result.temperature).numpy()
        out.best_effort("reliability diagram", reliability_diagram, labels_t.numpy(), before, after, out.reliability)
    return result
