"""Score labelled images with a detector and write metrics people can open."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from synthdet.data.loader import SkipLog
from synthdet.data.sources import IgnoredFiles, ImageRecord
from synthdet.evaluation import plots
from synthdet.evaluation.metrics import binary_metrics, mean_source_accuracy, per_source_rows
from synthdet.evaluation.tables import fmt, markdown_table
from synthdet.inference.detector import Detector, Prediction, PredictOptions
from synthdet.inference.views import ResizeTransform
from synthdet.rundir import RunDir, atomic_path, write_atomic

SOURCE_COLUMNS = ("source", "n", "n_real", "n_synthetic", "accuracy", "mean_p_synthetic", "roc_auc")


@dataclass
class EvaluationResult:
    metrics: dict  # overall: accuracy, precision, recall, f1, confusion matrix, ROC-AUC, AP
    per_source: list[dict]
    mean_source_accuracy: float
    skipped: SkipLog
    predictions: list[tuple[ImageRecord, Prediction]] = field(default_factory=list)
    ignored: IgnoredFiles = field(default_factory=IgnoredFiles)  # what the folder scans passed over
    view: str = "center crop"  # what the model saw of each image

    def scored(self) -> list[tuple[ImageRecord, Prediction]]:
        return [(r, p) for r, p in self.predictions if p.ok]

    @cached_property
    def provenance(self) -> dict:
        """What the scored files declare (:func:`provenance_summary`), computed once for JSON and Markdown."""
        return provenance_summary(self.scored())

    def to_json(self) -> dict:
        return {
            "overall": self.metrics,
            "per_source": self.per_source,
            "mean_source_accuracy": self.mean_source_accuracy,
            "view": self.view,
            "skipped": [{"path": p, "reason": r} for p, (r, _) in sorted(self.skipped.entries.items())],
            "ignored": self.ignored.to_dict(),
            "provenance": self.provenance,
        }


def evaluate_records(
    detector: Detector,
    records: list[ImageRecord],
    threshold: float | None = None,
    batch_size: int = 32,
    workers: int = -1,
    progress: bool = False,
    tiles: bool | None = None,
    resize: bool = False,
    ignored: IgnoredFiles | None = None,
) -> EvaluationResult:
    """Score every record; unreadable files are reported in ``skipped`` and left out of the metrics.

    By default each image is scored as validation during training was, so the numbers
    compare: the checkpoint's view, or its center crop when it has none. ``tiles=True``
    scores tiles like ``predict`` does for such checkpoints; ``resize=True`` downscales each
    image (shorter side to the crop, then its center), as work on 32x32 models scores larger
    pictures. ``ignored`` (what the scans that found the records passed over) is carried
    into the result.
    """
    threshold = detector.threshold_for(threshold)
    if tiles is None and detector.meta.view is None:
        tiles = False
    options = PredictOptions(tiles=tiles, threshold=threshold, batch_size=batch_size, workers=workers)
    height, width = detector.crop
    transform = ResizeTransform(detector.crop) if resize else None
    mode = "resize" if resize else "tiles" if tiles else detector.meta.view.mode if tiles is None else "crop"
    view = {"resize": f"image resized (shorter side) and center-cropped to {width}x{height}", "tiles": "tiles",
            "crop": f"center crop {width}x{height}"}[mode]
    pairs = list(zip(records, detector.score_items([r.path for r in records], options, progress, transform)))
    skipped = SkipLog()
    for record, prediction in pairs:
        if not prediction.ok:
            skipped.add(record.path, prediction.error, "evaluate")
    scored = [(r, p) for r, p in pairs if p.ok]
    labels, probs, logits = labels_probs_logits(scored)
    rows = per_source_rows([r.source for r, _ in scored], labels, probs, threshold, logits)
    metrics = binary_metrics(labels, probs, threshold, logits)
    return EvaluationResult(metrics, rows, mean_source_accuracy(rows), skipped, pairs, ignored or IgnoredFiles(), view)


def provenance_summary(scored: list[tuple[ImageRecord, Prediction]]) -> dict:
    """What the scored files declare, per true label (files carrying each kind of evidence), and how
    often the combined verdict differs from the pixel verdict. The metrics above stay the pixels'."""
    rows: dict[str, dict] = {}
    differs = combined_right = pixels_right = 0
    for record, p in scored:
        for evidence in {(e["kind"], e["strength"]) for e in (p.provenance or {}).get("evidence", [])}:
            row = rows.setdefault(evidence, {"evidence": evidence[0], "strength": evidence[1], "real": 0,
                                             "synthetic": 0})
            row[record.label_name] += 1
        differs += p.verdict != p.label
        combined_right += (p.verdict or p.label) == record.label_name
        pixels_right += p.label == record.label_name
    n = len(scored)
    return {"rows": sorted(rows.values(), key=lambda r: (r["strength"], r["evidence"])), "n": n,
            "verdict_differs_from_pixels": differs,
            "pixel_accuracy": pixels_right / n if n else None, "combined_accuracy": combined_right / n if n else None}


def labels_probs_logits(scored: list[tuple[ImageRecord, Prediction]]) -> tuple[list[int], list[float], list[float]]:
    """True labels, P(synthetic) and log-odds of scored (record, prediction) pairs, for the metric functions."""
    return [r.label for r, _ in scored], [p.prob_synthetic for _, p in scored], [p.logit for _, p in scored]


def write_evaluation(result: EvaluationResult, out_dir: Path, figures: bool = True) -> None:
    """metrics.json, metrics.md (tables), predictions.csv, skipped.csv, then figures in ``out_dir``.

    The metrics files come first; figures are drawn best-effort (see :meth:`RunDir.best_effort`).
    """
    out = RunDir(out_dir).prepare()
    write_atomic(out.metrics, json.dumps(result.to_json(), indent=2))
    write_atomic(out.metrics_md, markdown_summary(result))
    with atomic_path(out.predictions) as tmp, tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "source", "label", "predicted", "prob_synthetic", "verdict", "basis", "provenance",
                         "error"])
        for record, pred in result.predictions:
            prob = "" if pred.prob_synthetic is None else f"{pred.prob_synthetic:.6f}"
            declared = (pred.provenance or {}).get("summary", "")
            writer.writerow([record.path, record.source, record.label_name, pred.label or "", prob, pred.verdict or "",
                             pred.basis or "", declared, pred.error or ""])
    result.skipped.write(out.skipped)
    if figures:
        write_figures(result, out)


GALLERY_SIZE = 12
#: Gallery figure name -> (true class, whether the call was right, title).
GALLERIES = {
    "gallery_real_correct": (0, True, "real, correctly classified"),
    "gallery_real_as_synthetic": (0, False, "real classified as synthetic"),
    "gallery_synthetic_correct": (1, True, "synthetic, correctly classified"),
    "gallery_synthetic_as_real": (1, False, "synthetic classified as real"),
}


def write_figures(result: EvaluationResult, out: RunDir) -> None:
    """Confusion matrix, ROC and precision-recall curves, and galleries of right and wrong calls.

    Galleries show, per true class, the most confident correct and the most confident wrong
    predictions, with P(synthetic) printed on each thumbnail.
    """
    scored = result.scored()
    labels, probs, _ = labels_probs_logits(scored)
    out.best_effort("confusion matrix figure", plots.confusion_matrix_plot, result.metrics["confusion_matrix"],
                    out.figure("confusion"))
    if len(set(labels)) == 2:
        out.best_effort("ROC and precision-recall figures", plots.roc_and_pr, labels, probs, out.figure("roc"),
                        out.figure("pr"))
    for figure, (true_label, right, title) in GALLERIES.items():
        items = [(r, p) for r, p in scored if r.label == true_label and (p.label == r.label_name) == right]
        # Most confident first: far from the threshold in the predicted direction.
        items.sort(key=lambda rp: abs(rp[1].prob_synthetic - 0.5), reverse=True)
        thumbs = [(r.path, p.prob_synthetic) for r, p in items[:GALLERY_SIZE]]
        out.best_effort(f"{figure} figure", plots.gallery, thumbs, f"{title} ({len(items)} in all)",
                        out.figure(figure))


def markdown_summary(result: EvaluationResult) -> str:
    m = result.metrics
    overall = {k: m[k] for k in ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision")}
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    return "\n\n".join(
        [
            "# Evaluation",
            f"Each image was scored on: {result.view}.",
            "## Per source\n\n" + markdown_table(result.per_source, SOURCE_COLUMNS)
            + f"\n\nMean accuracy over sources: **{fmt(result.mean_source_accuracy)}**",
            "## Overall\n\n" + markdown_table([overall], tuple(overall)),
            "## Confusion matrix\n\n| true \\ predicted | real | synthetic |\n|---|---|---|\n"
            f"| real | {tn} | {fp} |\n| synthetic | {fn} | {tp} |",
            f"Skipped files: {len(result.skipped)}" + (" (see skipped.csv)" if len(result.skipped) else "")
            + (f"; the folder scans {result.ignored}" if result.ignored.total else ""),
            "## Provenance\n\n" + provenance_text(result.provenance),
        ]
    ) + "\n"


PROVENANCE_COLUMNS = ("evidence", "strength", "real", "synthetic")


def provenance_sentence(summary: dict) -> str:
    """How often the combined verdict differs from the pixels', and both accuracies."""
    return (f"The combined verdict (provenance beside pixels) differs from the pixel verdict on "
            f"{summary['verdict_differs_from_pixels']} of {summary['n']} images; accuracy "
            f"{fmt(summary['combined_accuracy'])} combined, {fmt(summary['pixel_accuracy'])} from the pixels alone.")


def provenance_text(summary: dict) -> str:
    """The provenance summary as Markdown: files with each kind of evidence per label, and the verdicts."""
    table = markdown_table(summary["rows"], PROVENANCE_COLUMNS) if summary["rows"] else "No file declared anything."
    return f"{table}\n\n{provenance_sentence(summary)}"
