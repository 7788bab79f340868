"""Binary detection metrics (synthetic = positive class), computed with scikit-learn."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from synthdet.data.labels import SYNTHETIC


def binary_metrics(labels: Sequence[int], probs: Sequence[float], threshold: float = 0.5,
                   scores: Sequence[float] | None = None) -> dict:
    """Accuracy, precision, recall, F1, confusion matrix; ROC-AUC and AP when both classes occur.

    ``probs`` are probabilities of the synthetic class; ``labels`` 0 = real, 1 = synthetic.
    ``scores`` (log-odds) rank the images for ROC-AUC and AP when given: a confident model's
    probabilities round to exactly 0 or 1, and such ties would count as chance.
    """
    # Imported here, not at the top: scikit-learn is 60 MB that importing the trainer (and
    # with it the CLI, before it predicts) would otherwise pay for nothing.
    from sklearn import metrics as skm

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    rank = p if scores is None else np.asarray(scores, dtype=float)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    result = {
        "n": int(len(y)),
        "n_real": int((y != SYNTHETIC).sum()),
        "n_synthetic": int((y == SYNTHETIC).sum()),
        "threshold": float(threshold),
        "accuracy": float(skm.accuracy_score(y, pred)) if len(y) else float("nan"),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        # rows: true real, true synthetic; columns: predicted real, predicted synthetic
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=[0, 1]).tolist(),
        "roc_auc": float(skm.roc_auc_score(y, rank)) if both else None,
        "average_precision": float(skm.average_precision_score(y, rank)) if both else None,
    }
    return result


def per_source_rows(
    sources: Sequence[str], labels: Sequence[int], probs: Sequence[float], threshold: float = 0.5,
    scores: Sequence[float] | None = None,
) -> list[dict]:
    """One row per source: counts, accuracy and (for mixed sources) ROC-AUC."""
    by_source: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        by_source[source].append(i)
    y, p = np.asarray(labels, dtype=int), np.asarray(probs, dtype=float)
    rank = p if scores is None else np.asarray(scores, dtype=float)
    rows = []
    for source in sorted(by_source):
        idx = np.asarray(by_source[source])
        m = binary_metrics(y[idx], p[idx], threshold, rank[idx])
        rows.append(
            {
                "source": source,
                "n": m["n"],
                "n_real": m["n_real"],
                "n_synthetic": m["n_synthetic"],
                "accuracy": m["accuracy"],
                "mean_p_synthetic": float(p[idx].mean()),
                "roc_auc": m["roc_auc"],
            }
        )
    return rows


def mean_source_accuracy(rows: list[dict]) -> float:
    """Unweighted mean over sources, so a small source counts as much as a large one."""
    return float(np.mean([r["accuracy"] for r in rows])) if rows else float("nan")
