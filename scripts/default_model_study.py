"""Choose the default detector's views and branches on the pool, and hold out each modern generator.

Reads a training run of configs/default_detector.yaml (its splits.csv and head) and the
embedding cache that run filled; only the pool is used, never ../shared/data.

1. Views: on a validation subsample, the trained head scores 1 center crop and tile sets of
   up to 4, 9 and 16 crops (their mean logit); ROC-AUC per view count, overall and per source.
2. Leave-one-generator-out: for GPT-4o, Nano Banana Pro, SDXL, FLUX.1 (schnell and dev) and Playground
   v2 in turn, a head is trained without that generator's images (the recipe of the run) and
   tested on them against the pool's real test images.
3. A low-level branch (spectrum and residual statistics of the same crops, a logistic
   regression) fused late with the CLIP head: fusion weights fitted on validation; reported
   on the test split and in every leave-one-generator-out fold.

    .venv/bin/python scripts/default_model_study.py runs/default-2612/default_detector-* \
        --out docs/default_model_study.md
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from synthdet.config import load_config
from synthdet.data.sources import ImageRecord, read_split_csv
from synthdet.evaluation.tables import markdown_table
from synthdet.inference.detector import Detector
from synthdet.inference.embeddings import embed_items
from synthdet.inference.scoring import log_odds
from synthdet.inference.tiles import TileTransform
from synthdet.inference.views import VIEW_TILE_OVERLAP, make_view
from synthdet.models.probe import ProbeHead
from synthdet.runtime import machine_summary
from synthdet.training.probe import Embedded, fit_head, training_views

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = {"GPT-4o": ["gpt-4o"], "Nano Banana Pro": ["nano-banana-pro"], "SDXL": ["sdxl-base-1.0"],
            "FLUX.1 (schnell, dev)": ["flux.1-schnell", "flux.1-dev"], "Playground v2": ["playground-v2"]}
VIEW_COUNTS = (4, 9, 16)
LOW_LEVEL = ("spectrum", "residual")
#: validation images per (source, label) in the view study
PER_CELL = 25


def generators_by_path(manifest: Path) -> dict[str, str]:
    """A pulled pool's generator of each file, by the file's resolved path ("?" where none is named)."""
    with manifest.open(newline="") as fh:
        return {str((manifest.parent / row["path"]).resolve()): row.get("generator") or "?"
                for row in csv.DictReader(fh)}


def parts_per_image(detector: Detector, records: list[ImageRecord], transform, desc: str) -> dict[int, dict]:
    """Per record index: every cached part of every view under ``transform`` (V x d arrays)."""
    found: dict[int, dict] = {}
    paths = [r.path for r in records]
    for batch, parts in embed_items(detector.net, paths, transform, detector.cache, detector.device,
                                    detector.precision, 64, 2, desc):
        start = 0
        for i, index in enumerate(batch.indices.tolist()):
            found[index] = {k: v[start : start + batch.views[i]].numpy() for k, v in parts.items()}
            start += batch.views[i]
    return found


def embedded(records: list[ImageRecord], views: list[dict[int, dict]], select) -> Embedded:
    """Records with all views present, their selected vectors stacked over the view sets."""
    keep = [i for i in range(len(records)) if all(i in v for v in views)]
    vectors = [torch.from_numpy(np.concatenate([select(v[i]) for v in views])) for i in keep]
    return Embedded(vectors, [records[i].label for i in keep], [records[i].source for i in keep])


def head_logits(head, data: Embedded) -> np.ndarray:
    """An image's score: its views' mean log-odds (the Detector's rule)."""
    with torch.no_grad():
        return np.array([float(log_odds(head(v)).mean()) for v in data.vectors])


def train_heads(config, train: dict[str, Embedded], val: dict[str, Embedded]) -> dict[str, ProbeHead]:
    """The CLIP head with the run's recipe and the low-level logistic regression."""
    options = config.model.options
    clip = ProbeHead(train["clip"].vectors[0].shape[1], 2, options.get("head", "linear"))
    fit_head(clip, train["clip"], val["clip"], config)
    low = ProbeHead(train["low"].vectors[0].shape[1], 2, "linear")
    fit_head(low, train["low"], val["low"], config)
    return {"clip": clip.eval(), "low": low.eval()}


def fusion(heads, val: dict[str, Embedded]) -> LogisticRegression:
    x = np.stack([head_logits(heads["clip"], val["clip"]), head_logits(heads["low"], val["low"])], 1)
    return LogisticRegression().fit(x, val["clip"].labels)


def scores(heads, fuse, data: dict[str, Embedded]) -> dict[str, np.ndarray]:
    clip, low = head_logits(heads["clip"], data["clip"]), head_logits(heads["low"], data["low"])
    return {"clip": clip, "low-level": low, "fused": fuse.decision_function(np.stack([clip, low], 1))}


def auc(labels, logits) -> float | None:
    return float(roc_auc_score(labels, logits)) if len(set(labels)) == 2 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a training run folder of configs/default_detector.yaml")
    parser.add_argument("--manifest", type=Path, default=ROOT / "pool" / "manifest.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "default_model_study.md")
    parser.add_argument("--skip-views", action="store_true")
    args = parser.parse_args()
    config = load_config(args.run / "config.yaml")
    detector = Detector.load(args.run / "best.safetensors")
    probe = detector.net.backbone
    records = read_split_csv(args.run / "splits.csv")
    generator = generators_by_path(args.manifest)
    by_split = {s: [r for r in records if r.split == s] for s in ("train", "val", "test")}
    center = make_view(config.data.view, config.data.crop)
    pick = {"clip": lambda p: probe.select({k: torch.from_numpy(v) for k, v in p.items()}).numpy(),
            "low": lambda p: np.concatenate([p[k] for k in LOW_LEVEL], 1)}
    transforms = {s: training_views(center, config.augment) if s == "train" else [center] for s in by_split}
    views = {s: [parts_per_image(detector, rs, t, f"{s} {t.cache_key}") for t in transforms[s]]
             for s, rs in by_split.items()}
    for s in by_split:  # files that could not be read (see the run's skipped.csv) take no part
        readable = [i for i in range(len(by_split[s])) if all(i in v for v in views[s])]
        by_split[s] = [by_split[s][i] for i in readable]
        views[s] = [{new: v[old] for new, old in enumerate(readable)} for v in views[s]]
    data = {s: {b: embedded(by_split[s], views[s], f) for b, f in pick.items()} for s in by_split}
    report: dict = {"machine": machine_summary(), "run": str(args.run), "precision": detector.precision}

    # Branches on the test split: trained on train, chosen and fused on validation.
    heads = train_heads(config, data["train"], data["val"])
    fuse = fusion(heads, data["val"])
    test_scores = scores(heads, fuse, data["test"])
    report["test"] = {name: auc(data["test"]["clip"].labels, s) for name, s in test_scores.items()}
    report["fusion_weights"] = {"clip": float(fuse.coef_[0][0]), "low-level": float(fuse.coef_[0][1])}
    print(json.dumps(report), flush=True)

    # Leave one generator out: no image of it in training or validation.
    real_test = [i for i, r in enumerate(by_split["test"]) if r.label == 0]
    logo = []
    for name, held in HELD_OUT.items():
        def keep(split):
            idx = [i for i, r in enumerate(by_split[split]) if generator.get(r.path) not in held]
            return {b: d.take(idx) for b, d in data[split].items()}

        started = time.perf_counter()
        fold_heads = train_heads(config, keep("train"), keep("val"))
        fold_fuse = fusion(fold_heads, keep("val"))
        held_records = [(s, i) for s in by_split for i, r in enumerate(by_split[s]) if generator.get(r.path) in held]
        test = {b: Embedded([data["test"][b].vectors[i] for i in real_test] +
                            [data[s][b].vectors[i][:1] for s, i in held_records],  # center view only
                            [0] * len(real_test) + [1] * len(held_records), [])
                for b in pick}
        fold = scores(fold_heads, fold_fuse, test)
        row = {"held_out": name, "n_synthetic": len(held_records), "n_real": len(real_test),
               **{f"roc_auc_{b}": auc(test["clip"].labels, s) for b, s in fold.items()},
               "minutes": (time.perf_counter() - started) / 60}
        logo.append(row)
        print(json.dumps(row), flush=True)
    report["leave_one_generator_out"] = logo

    if not args.skip_views:
        report["views"] = view_study(detector, config, by_split["val"], heads, fuse, pick)
    write(report, args.out)


def view_study(detector, config, val: list[ImageRecord], heads, fuse, pick) -> list[dict]:
    """ROC-AUC against the number of crops an image is scored with, on a validation subsample."""
    cells = defaultdict(list)
    for i, r in enumerate(val):
        cells[(r.source, r.label)].append(i)
    rng = random.Random(0)
    chosen = sorted(i for members in cells.values() for i in rng.sample(members, min(PER_CELL, len(members))))
    sample = [val[i] for i in chosen]
    transforms = {1: make_view(config.data.view, config.data.crop),
                  **{n: TileTransform(config.data.crop, VIEW_TILE_OVERLAP, n) for n in VIEW_COUNTS}}
    rows = []
    for n, transform in transforms.items():
        started = time.perf_counter()
        found = parts_per_image(detector, sample, transform, f"views {transform.cache_key}")
        seconds = time.perf_counter() - started
        data = {b: embedded(sample, [found], f) for b, f in pick.items()}
        s = scores(heads, fuse, data)
        labels = data["clip"].labels
        per_source = defaultdict(lambda: ([], []))
        real = [x for x, y in zip(s["clip"], labels) if y == 0]
        for record, x in zip((sample[i] for i in range(len(sample)) if i in found), s["clip"]):
            if record.label == 1:
                per_source[record.source][1].append(x)
        rows.append({"views": f"1 center crop" if n == 1 else f"tiles, up to {n}",
                     "mean_views": float(np.mean([len(v) for v in data["clip"].vectors])), "n": len(labels),
                     **{f"roc_auc_{b}": auc(labels, x) for b, x in s.items()},
                     "worst_synthetic_source": "{1} {0:.3f}".format(*min(
                         (roc_auc_score([0] * len(real) + [1] * len(xs), real + xs), src)
                         for src, (_, xs) in per_source.items())),
                     "seconds_per_image_uncached": seconds / len(sample)})
        print(json.dumps(rows[-1], default=str), flush=True)
    return rows


def decision(report: dict) -> str:
    """The rule the issue set: a change ships only if it beats the plain head on held-out pool data."""
    logo = report["leave_one_generator_out"]
    clip, fused = (float(np.mean([r[f"roc_auc_{b}"] for r in logo])) for b in ("clip", "fused"))
    branch = ("the low-level branch is fused in" if fused > clip + 0.005 else
              f"the low-level branch is not kept (held-out mean ROC-AUC {fused:.3f} fused against {clip:.3f} "
              "without it)")
    views = report.get("views") or []
    one = next((r for r in views if r["mean_views"] == 1.0), None)
    best = max(views, key=lambda r: r["roc_auc_clip"]) if views else None
    if one is None or best is None or best is one or best["roc_auc_clip"] <= one["roc_auc_clip"] + 0.005:
        view = "one center crop stays the default view" + (
            f" (validation ROC-AUC {one['roc_auc_clip']:.3f}; no tile budget beat it by more than 0.005)" if one else "")
    else:
        view = f"the default view becomes {best['views']} (validation ROC-AUC {best['roc_auc_clip']:.3f})"
    return f"By these numbers {branch}, and {view}."


def write(report: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    text = ["# Choosing the default detector on the pool", "",
            f"Produced by `scripts/default_model_study.py` from `{report['run']}` on {report['machine']} "
            f"(CLIP in {report['precision']}). Only the pool is used; `../shared/data` plays no part.", "",
            "## Branches on the pool's test split", "",
            "The CLIP head (CLS tokens of every block, the run's recipe), a low-level branch (spectrum and "
            "residual statistics of the same crops, logistic regression) and their late fusion (weights "
            "fitted on validation: "
            + ", ".join(f"{k} {v:+.3f}" for k, v in report["fusion_weights"].items()) + ").", "",
            markdown_table([{"branch": k, "roc_auc": v} for k, v in report["test"].items()], ("branch", "roc_auc")),
            "", "## Leave one generator out", "",
            "Each row: trained without any image of that generator, tested on all its images against the "
            "pool's real test images (center crop).", "",
            markdown_table(report["leave_one_generator_out"],
                           ("held_out", "n_synthetic", "n_real", "roc_auc_clip", "roc_auc_low-level", "roc_auc_fused")),
            ""]
    logo = report["leave_one_generator_out"]
    text += [f"Mean ROC-AUC: CLIP {np.mean([r['roc_auc_clip'] for r in logo]):.3f}, "
             f"fused {np.mean([r['roc_auc_fused'] for r in logo]):.3f}.", ""]
    if "views" in report:
        text += ["## Views", "",
                 "A validation subsample (at most 25 images per source and label), scored by the head "
                 "trained on center crops and random-position copies; an image's score is its views' mean "
                 "logit. `seconds_per_image_uncached`: decoding and the backbone, on the machine above (the center "
                 "crops were embedded by the training run, so their figure is a cache read).", "",
                 markdown_table(report["views"], ("views", "mean_views", "n", "roc_auc_clip", "roc_auc_fused",
                                                  "worst_synthetic_source", "seconds_per_image_uncached")), ""]
    text += ["## What ships", "", decision(report), ""]
    out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
