"""PNG figures a person can open: curves, confusion matrix, reliability, robustness, galleries."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402

from synthdet.data.decode import ImageDecodeError, load_image  # noqa: E402
from synthdet.data.labels import CLASS_NAMES  # noqa: E402
from synthdet.rundir import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format=path.suffix.lstrip("."))
    finally:
        plt.close(fig)
    return path


def training_curves(history: list[dict], path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, style in (("train", "o-"), ("val", "s--")):
        loss_ax.plot(epochs, [h[f"{key}_loss"] for h in history], style, label=key)
        if f"{key}_accuracy" in history[0]:
            acc_ax.plot(epochs, [h[f"{key}_accuracy"] for h in history], style, label=key)
    loss_ax.set(title="loss", xlabel="epoch")
    acc_ax.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.legend()
    acc_ax.legend()
    return _save(fig, path)


def roc_and_pr(labels: Sequence[int], probs: Sequence[float], roc_path: Path, pr_path: Path) -> list[Path]:
    """ROC and precision-recall curves (synthetic = positive); needs both classes."""
    fpr, tpr, _ = roc_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot(fpr, tpr, lw=2)
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.set(title="ROC", xlabel="false positive rate (real called synthetic)", ylabel="true positive rate")
    paths = [_save(fig, roc_path)]
    precision, recall, _ = precision_recall_curve(labels, probs)
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot(recall, precision, lw=2)
    ax.axhline(np.mean(labels), ls=":", color="gray", label="chance")
    ax.set(title="precision-recall (synthetic)", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
    ax.legend()
    paths.append(_save(fig, pr_path))
    return paths


def confusion_matrix_plot(matrix: list[list[int]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(np.asarray(matrix)):
        ax.text(j, i, str(value), ha="center", va="center", fontsize=14)
    ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES,
           xlabel="predicted", ylabel="true", title="confusion matrix")
    return _save(fig, path)


def reliability_diagram(labels, probs_before, probs_after, path: Path, bins: int = 15) -> Path:
    """Fraction synthetic against predicted P(synthetic), before and after temperature scaling."""
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect")
    for probs, name, style in ((probs_before, "uncalibrated", "o-"), (probs_after, "calibrated", "s-")):
        observed, predicted = calibration_curve(labels, probs, n_bins=bins, strategy="uniform")
        ax.plot(predicted, observed, style, label=name)
    ax.set(title="reliability", xlabel="predicted P(synthetic)", ylabel="observed fraction synthetic",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend()
    return _save(fig, path)


def robustness_curves(rows: list[dict], path: Path) -> Path:
    """One panel per perturbation: accuracy and ROC-AUC against its strength."""
    by_kind: dict[str, list[dict]] = defaultdict(list)
    clean = next(r for r in rows if r["perturbation"] == "none")
    for row in rows:
        if row["perturbation"] != "none":
            by_kind[row["perturbation"]].append(row)
    fig, axes = plt.subplots(1, len(by_kind), figsize=(3.2 * len(by_kind), 3.3), squeeze=False)
    for ax, (kind, kind_rows) in zip(axes[0], by_kind.items()):
        labels = ["clean"] + [str(r["level"]) for r in kind_rows]
        series = [clean] + kind_rows
        ax.plot(labels, [r["accuracy"] for r in series], "o-", label="accuracy")
        if all(r["roc_auc"] is not None for r in series):
            ax.plot(labels, [r["roc_auc"] for r in series], "s--", label="ROC-AUC")
        ax.set(title=kind, ylim=(0, 1.02), xlabel=kind_rows[0]["unit"])
        ax.axhline(0.5, ls=":", color="gray")
    axes[0][0].legend(loc="lower left")
    return _save(fig, path)


def gallery(items: list[tuple[str, float]], title: str, path: Path, columns: int = 6, size: int = 160) -> Path:
    """Thumbnails of (image path, P(synthetic)) with the probability printed on each."""
    rows = max(1, -(-len(items) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.1 * columns, 2.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image_path, prob) in zip(axes.flat, items):
        try:
            ax.imshow(_thumbnail(image_path, size))
        except ImageDecodeError:
            ax.text(0.5, 0.5, "unreadable", ha="center")
        ax.set_title(f"P(synth)={prob:.2f}\n{Path(image_path).name[:22]}", fontsize=7)
    if not items:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=12)
    fig.suptitle(title)
    return _save(fig, path)


def _thumbnail(path: str, size: int) -> Image.Image:
    """The image scaled to fit ``size`` x ``size`` at its aspect, at least one pixel per side (a
    3x4000 image would otherwise shrink to zero width)."""
    image = Image.fromarray(load_image(path).pixels)
    scale = min(size / image.width, size / image.height)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                        Image.Resampling.BICUBIC)
