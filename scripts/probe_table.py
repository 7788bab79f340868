"""Leave-one-source-out over the public sets in ../shared/data for each backbone, part and view.

Every probe shares the embedding cache, so each (backbone, view) is embedded once and the
rest is fitting heads. Prints (and writes with --out) the probe table that
docs/results/public-sets.md includes: mean ROC-AUC and accuracy over the held-out sets,
and each set's ROC-AUC.

    .venv/bin/python scripts/probe_table.py --out docs/probes.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from synthdet.config import config_from_dict
from synthdet.evaluation.tables import fmt
from synthdet.protocols import leave_one_source_out

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = ("chatgpt-gemini-small", "gan-diffusion-playground", "gan-examples", "genimage-256", "unreal-vs-kinect")

CLIP = {"backbone": "clip_vit", "backbone_options": {"variant": "b16"}}
EFFNET = {"backbone": "efficientnet_lite", "backbone_options": {"variant": 0}}
#: name -> (weights key, probe options, view)
PROBES = {
    "EfficientNet-Lite0, pooled features": ("efficientnet_lite0", {**EFFNET, "embedding": ["final"]}, "crop"),
    "EfficientNet-Lite0, pooled features, resize": ("efficientnet_lite0", {**EFFNET, "embedding": ["final"]}, "resize"),
    "CLIP, final embedding": ("clip_vit_b16", {**CLIP, "embedding": ["final"]}, "crop"),
    "CLIP, final embedding, resize": ("clip_vit_b16", {**CLIP, "embedding": ["final"]}, "resize"),
    "CLIP, final embedding, 5 tiles": ("clip_vit_b16", {**CLIP, "embedding": ["final"]}, "tiles"),
    "CLIP, intermediate CLS tokens": ("clip_vit_b16", {**CLIP, "embedding": ["tokens"]}, "crop"),
    "CLIP, intermediate CLS tokens, resize": ("clip_vit_b16", {**CLIP, "embedding": ["tokens"]}, "resize"),
    "CLIP, intermediate CLS tokens, 5 tiles": ("clip_vit_b16", {**CLIP, "embedding": ["tokens"]}, "tiles"),
    "CLIP, intermediate CLS tokens, MLP head": (
        "clip_vit_b16", {**CLIP, "embedding": ["tokens"], "head": "mlp"}, "crop"),
    "CLIP, final + low-level statistics": (
        "clip_vit_b16", {**CLIP, "embedding": ["final"], "low_level": ["spectrum", "residual"]}, "crop"),
    "CLIP, tokens + low-level statistics, 5 tiles": (
        "clip_vit_b16", {**CLIP, "embedding": ["tokens"], "low_level": ["spectrum", "residual"]}, "tiles"),
}


def config_for(name: str, out: Path):
    key, options, view = PROBES[name]
    raw = {
        "name": name, "seed": 0, "output_dir": str(out),
        "data": {"crop": 224, "view": {"mode": view, "tiles": 5}, "splits": {"train": 0.8, "val": 0.2, "test": 0.0},
                 "workers": 2, "sources": [{"path": str(SHARED / s)} for s in SETS]},
        "features": {"representations": ["rgb"]},
        "model": {"name": "probe", "pretrained": key, "options": options},
        "train": {"select_metric": "auc", "batch_size": 32},
    }
    if options.get("head") == "mlp":  # as configs/default_detector.yaml trains it
        raw["train"] |= {"epochs": 30, "lr": 1e-3, "batch_size": 256}
    return config_from_dict(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/probe-table"))
    parser.add_argument("--out", type=Path, help="write the Markdown table here")
    parser.add_argument("--only", nargs="*", help="names of probes to run (default: all)")
    args = parser.parse_args()
    rows = []
    for name in args.only or PROBES:
        started = time.perf_counter()
        summary = leave_one_source_out(config_for(name, args.runs), args.runs / name.replace(" ", "_"))
        auc = {r["held_out"]: r.get("roc_auc") for r in summary["rows"]}
        rows.append({"probe": name, "mean_auc": summary["mean_roc_auc"], "mean_acc": summary["mean_accuracy"],
                     **auc, "minutes": (time.perf_counter() - started) / 60})
        print(json.dumps(rows[-1]), flush=True)
    header = "| probe | mean ROC-AUC | mean accuracy | " + " | ".join(SETS) + " | minutes |"
    lines = [header, "|" + "---|" * (len(SETS) + 4)]
    lines += ["| " + " | ".join([r["probe"], fmt(r["mean_auc"]), fmt(r["mean_acc"]), *(fmt(r.get(s)) for s in SETS),
                                 f"{r['minutes']:.1f}"]) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
