"""Generalization protocols: leave-one-source-out and stratified k-fold.

Leave-one-source-out answers "will it work on a source it never saw?": for each source
(or group of sources, e.g. all images of one generator) a model is trained on the others,
selected on their validation split, and tested on every image of the held-out one.
k-fold gives the spread of in-distribution accuracy: stratified by class, with whole
groups (video sequences) kept in one fold.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import replace
from pathlib import Path

from sklearn.model_selection import StratifiedGroupKFold

from synthdet.config import Config
from synthdet.data.labels import CLASS_NAMES
from synthdet.data.sources import ImageRecord, collect_records
from synthdet.evaluation.evaluate import evaluate_records, labels_probs_logits, write_evaluation
from synthdet.evaluation.tables import protocol_markdown
from synthdet.inference.detector import Detector
from synthdet.pipeline import train
from synthdet.rundir import RunDir, write_atomic
from synthdet.training.trainer import TrainingError

def leave_one_source_out(config: Config, out_dir: Path, groups: dict[str, list[str]] | None = None,
                         progress: bool = False) -> dict:
    """Train without each source (group) in turn and test on it; returns and writes the table."""
    records = collect_records(config.data.sources, config.data.splits, config.seed)
    units = source_groups(sorted({r.source for r in records}), groups or {})
    folds = []
    for name, members in units.items():
        held_out = [replace(r, split="test") for r in records if r.source in members]
        rest = [r for r in records if r.source not in members]
        folds.append((name, rest, held_out))
    return _run_folds(config, folds, out_dir, "leave-one-source-out", progress)


def kfold(config: Config, out_dir: Path, k: int = 5, progress: bool = False) -> dict:
    """Stratified, seeded k-fold over all images; each fold is tested once."""
    records = collect_records(config.data.sources, config.data.splits, config.seed)
    folds = []
    for i, test_indices in enumerate(kfold_test_indices(records, k, config.seed)):
        in_test = set(test_indices)
        held_out = [replace(records[j], split="test") for j in sorted(in_test)]
        # The rest keeps its hashed validation images for model selection; all else trains.
        rest = [replace(r, split="val" if r.split == "val" else "train")
                for j, r in enumerate(records) if j not in in_test]
        folds.append((f"fold {i + 1}", rest, held_out))
    return _run_folds(config, folds, out_dir, f"{k}-fold", progress)


def kfold_test_indices(records: list[ImageRecord], k: int, seed: int) -> list[list[int]]:
    """Test indices of each of ``k`` folds: stratified by (source, class), groups never split."""
    strata = [f"{r.source}/{r.label}" for r in records]
    groups = [r.group for r in records]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [sorted(test.tolist()) for _, test in splitter.split(records, strata, groups)]


def source_groups(sources: list[str], groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Named groups of sources to hold out together; every other source is its own group."""
    unknown = sorted({s for members in groups.values() for s in members} - set(sources))
    if unknown:
        raise ValueError(f"--group names unknown source(s) {unknown}; sources are {sources}")
    grouped = {s for members in groups.values() for s in members}
    return {**groups, **{s: [s] for s in sources if s not in grouped}}


def _run_folds(config: Config, folds, out_dir: Path, protocol: str, progress: bool) -> dict:
    out = RunDir(out_dir).prepare()
    rows = []
    for name, rest, held_out in folds:
        row = {"held_out": name, "n": len(held_out),
               "n_real": sum(r.label == 0 for r in held_out), "n_synthetic": sum(r.label == 1 for r in held_out)}
        missing = [CLASS_NAMES[c] for c in (0, 1) if not any(r.label == c and r.split == "train" for r in rest)]
        if missing:
            rows.append({**row, "status": f"skipped: no {' or '.join(missing)} training images without it"})
            continue
        fold_config = config.model_copy(update={"output_dir": out_dir, "name": _slug(name)}, deep=True)
        try:
            result = train(fold_config, progress=progress, records=rest, test=False, report=False)
        except TrainingError as exc:
            rows.append({**row, "status": f"skipped: {exc}"})
            continue
        evaluation = evaluate_records(Detector.load(result.best_checkpoint, config.train.device), held_out,
                                      workers=config.data.workers)
        write_evaluation(evaluation, RunDir(result.run_dir).held_out.root)
        m = evaluation.metrics
        _, probs, _ = labels_probs_logits(evaluation.scored())
        rows.append({**row, "n": m["n"], "accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                     "mean_p_synthetic": statistics.fmean(probs) if probs else None,
                     "status": "ok", "run": str(result.run_dir)})
    summary = {"protocol": protocol, "rows": rows, **_mean_std(rows, "accuracy"), **_mean_std(rows, "roc_auc")}
    write_atomic(out.protocol, json.dumps(summary, indent=2))
    write_atomic(out.protocol_md, protocol_markdown(summary))
    return summary


def _mean_std(rows: list[dict], key: str) -> dict:
    values = [r[key] for r in rows if r.get(key) is not None]
    return {f"mean_{key}": statistics.fmean(values) if values else None,
            f"std_{key}": statistics.pstdev(values) if len(values) > 1 else None}


def _slug(name: str) -> str:
    return "heldout-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)
