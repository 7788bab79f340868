"""Compare training recipes of the default detector on pool sources they never saw, clean and after JPEG 75.

The pool's own validation split no longer separates recipes (every variant scores about 0.99
there), so each recipe is judged by leave-one-source-out folds chosen before any run: a
whole source (both classes where it has both) is left out of training and validation, and
its images are scored against the other class from the rest of the pool's test split. Every
fold is scored on clean center crops and on the same crops after a JPEG 75 re-save. Only the
pool is used, never ../shared/data.

A variant is a config plus overrides (``with=SOURCE``, ``without=SOURCE`` add or leave out a
source); every variant is evaluated on the same fold images (those of the first variant's
records), so only training differs:

    .venv/bin/python scripts/held_out_study.py runs/default-2612/default_detector \
        --variant "shipped recipe=configs/default_detector.yaml" \
        --variant "two degraded copies=configs/default_detector.yaml,augment.copies=2"
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from synthdet.config import Config, SourceConfig, load_config
from synthdet.data.loader import SkipLog
from synthdet.data.sources import ImageRecord, collect_records
from synthdet.evaluation.robustness import Perturbation, Perturbed
from synthdet.evaluation.tables import markdown_table
from synthdet.inference.detector import Detector
from synthdet.inference.views import make_view
from synthdet.models.probe import ProbeHead
from synthdet.runtime import machine_summary
from synthdet.training.probe import Embedded, embed_records, fit_head, training_views

from default_model_study import head_logits  # beside this script

ROOT = Path(__file__).resolve().parents[1]
#: left out in turn; chosen for variety before any run: web images of both classes, older and
#: newer generators, art, faces, and two kinds of real photo (ImageNet objects, driving frames)
FOLDS = ("media-authenticity", "dif-generators", "stylegan2-faces", "imagen-2022-renders", "ai-bingo-2023",
         "sd-cheatsheet", "chat-generators-2025", "t2i-cmp-2023", "imagenet-samples", "camvid-png")
#: images of the left-out source scored per class (a seeded sample)
PER_CLASS = 150
JPEG75 = Perturbation("jpeg", 75, "JPEG quality")


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    name, _, rest = text.partition("=")
    config, *overrides = rest.split(",")
    return name, Path(config), overrides


def variant_records(path: Path, overrides: list[str]) -> tuple[Config, list[ImageRecord]]:
    """A variant's config and records: ``without=SOURCE`` leaves a source out, ``with=SOURCE`` adds one of the
    pulled pool manifest the config reads (all its images, split by its group column)."""
    picked = {key: {item.partition("=")[2] for item in overrides if item.startswith(f"{key}=")}
              for key in ("with", "without")}
    dropped = picked["without"]
    config = load_config(path, [item for item in overrides if not item.startswith(("with=", "without="))])
    pool = next(source.manifest for source in config.data.sources if source.manifest is not None)
    config.data.sources += [SourceConfig(manifest=pool, select=[name]) for name in sorted(picked["with"])]
    records = collect_records(config.data.sources, config.data.splits, config.seed)
    if unknown := dropped - {r.source for r in records}:
        raise SystemExit(f"{path}: no source named {', '.join(sorted(unknown))}")
    return config, [r for r in records if r.source not in dropped]


def fold_images(records: list[ImageRecord], held: str) -> list[ImageRecord]:
    """The left-out source's sample, plus the other class from the rest of the test split where it has one class."""
    own = [r for r in records if r.source == held]
    rng = random.Random(held)
    picked = [r for label in (0, 1) for r in rng.sample([r for r in own if r.label == label],
                                                         min(PER_CLASS, sum(r.label == label for r in own)))]
    if len({r.label for r in own}) == 2:
        return picked
    other = 1 - own[0].label
    return picked + [r for r in records if r.split == "test" and r.source != held and r.label == other]


def without(data: Embedded, held: str) -> Embedded:
    return data.take([i for i, s in enumerate(data.sources) if s != held])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a training run of configs/default_detector.yaml (its backbone)")
    parser.add_argument("--variant", action="append", required=True, help="NAME=CONFIG[,key=value...]")
    parser.add_argument("--folds", nargs="*", default=list(FOLDS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "held_out_study.md")
    args = parser.parse_args()
    detector = Detector.load(args.run / "best.safetensors")
    variants = [parse_variant(v) for v in args.variant]
    report = {"machine": machine_summary(), "precision": detector.precision, "per_class": PER_CLASS,
              "variants": [{"name": n, "config": str(c), "overrides": o} for n, c, o in variants], "rows": []}
    unreadable = SkipLog()  # fold images that could not be scored (every run scores every fold)
    skipped_in_training = SkipLog()  # a training run's skipped.csv lists these
    # rows of an earlier run of the same variant (name, config, overrides) and fold are kept, not refitted
    earlier_json = args.out.with_suffix(".json")
    earlier = json.loads(earlier_json.read_text()) if earlier_json.exists() else {}
    spec = {v["name"]: v for v in earlier.get("variants", [])}
    done = {(r["variant"], r["held_out"]): r for r in earlier.get("rows", [])
            if spec.get(r["variant"]) in report["variants"]}

    base, base_records = variant_records(variants[0][1], variants[0][2])
    center = make_view(base.data.view, base.data.crop)
    scored = {}
    for held in args.folds:
        images = fold_images(base_records, held)
        scored[held] = {"clean": embed_records(detector, images, [center], unreadable, f"{held} clean", base, True),
                        "jpeg75": embed_records(detector, images, [Perturbed(center, JPEG75)], unreadable,
                                                f"{held} jpeg75", base, True)}

    for name, path, overrides in variants:
        if all((name, held) in done for held in args.folds):
            report["rows"] += [done[(name, held)] for held in args.folds]
            continue
        config, records = variant_records(path, overrides)
        view = make_view(config.data.view, config.data.crop)
        train = embed_records(detector, [r for r in records if r.split == "train"],
                              training_views(view, config.augment), skipped_in_training, f"{name} train", config,
                              True)
        val = embed_records(detector, [r for r in records if r.split == "val"], [view], skipped_in_training,
                            f"{name} val", config, True)
        for held in args.folds:
            started = time.perf_counter()
            head = ProbeHead(train.vectors[0].shape[1], 2, config.model.options.get("head", "linear"))
            fit_head(head, without(train, held), without(val, held), config)
            head.eval()
            row = {"variant": name, "held_out": held, "n": len(scored[held]["clean"].labels),
                   **{k: float(roc_auc_score(d.labels, head_logits(head, d))) for k, d in scored[held].items()},
                   "seconds": round(time.perf_counter() - started, 1)}
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    report["unreadable_fold_images"] = {str(Path(path).relative_to(ROOT)): reason
                                        for path, (reason, _) in sorted(unreadable.entries.items())}
    write(report, args.out)


def write(report: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    rows = report["rows"]
    names = [v["name"] for v in report["variants"]]
    key = {n: chr(ord("A") + i) for i, n in enumerate(names)}  # short column names for the per-fold tables
    folds = list(dict.fromkeys(r["held_out"] for r in rows))
    cell = {(r["variant"], r["held_out"]): r for r in rows}

    def per_fold(score: str) -> list[dict]:
        return [{"held out": f, "n": cell[(names[0], f)]["n"], **{key[n]: cell[(n, f)][score] for n in names}}
                for f in folds]

    summary = [{"": key[n], "variant": n, "mean clean": float(np.mean([cell[(n, f)]["clean"] for f in folds])),
                "mean jpeg75": float(np.mean([cell[(n, f)]["jpeg75"] for f in folds])),
                "worst clean": min(cell[(n, f)]["clean"] for f in folds)} for n in names]
    for s in summary:
        s["jpeg75 drop"] = s["mean clean"] - s["mean jpeg75"]
    variants = "\n".join(f"- {key[v['name']]}, **{v['name']}**: `{v['config']}`"
                         + (f" with `{' '.join(v['overrides'])}`" if v["overrides"] else "")
                         for v in report["variants"])
    text = ["# Recipes on held-out pool sources", "",
            f"Produced by `scripts/held_out_study.py` on {report['machine']} (CLIP in {report['precision']}). "
            "Each fold leaves one pool source out of training and validation (both classes where it has both) "
            f"and scores up to {report['per_class']} of its images per class, against the other class from the "
            "rest of the pool's test split where the source has one class. Center crops, clean and after a "
            "JPEG 75 re-save. Only the pool is used; `../shared/data` plays no part.", "", variants, "",
            "## Held-out pool sources: mean ROC-AUC over the folds", "",
            markdown_table(summary, ("", "variant", "mean clean", "mean jpeg75", "jpeg75 drop", "worst clean")), "",
            "## Held-out pool sources: each fold, clean (ROC-AUC)", "",
            markdown_table(per_fold("clean"), ("held out", "n", *key.values())), "",
            "## Held-out pool sources: each fold, JPEG 75 (ROC-AUC)", "",
            markdown_table(per_fold("jpeg75"), ("held out", "n", *key.values())), ""]
    out.write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
