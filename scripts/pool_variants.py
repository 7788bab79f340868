"""Choose the default detector's parts and head on the pool alone: validation and leave-one-source-out.

Each variant of configs/default_detector.yaml (which backbone outputs, which head) is trained
on the pool's training split and scored on its validation split, then trained once per
pool source without it and tested on it. Embeddings come from the cache, so a variant
costs head fits, not backbone passes. ../shared/data plays no part here.

    .venv/bin/python scripts/pool_variants.py --out docs/pool_variants.md
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from synthdet.config import load_config
from synthdet.evaluation.tables import markdown_table
from synthdet.pipeline import train
from synthdet.protocols import leave_one_source_out

ROOT = Path(__file__).resolve().parents[1]
#: name -> model.options overrides
VARIANTS = {
    "final embedding, linear": {"embedding": ["final"], "head": "linear"},
    "final embedding, MLP": {"embedding": ["final"], "head": "mlp"},
    "final + low-level statistics, linear": {"embedding": ["final"], "low_level": ["spectrum", "residual"],
                                             "head": "linear"},
    "CLS tokens of every block, linear": {"embedding": ["tokens"], "head": "linear"},
    "CLS tokens of every block, MLP": {"embedding": ["tokens"], "head": "mlp"},
    "final + CLS tokens, linear": {"embedding": ["final", "tokens"], "head": "linear"},
}
COLUMNS = ("variant", "val_roc_auc", "val_accuracy", "loso_mean_accuracy", "loso_mixed_roc_auc", "minutes")


def run(name: str, overrides: dict, runs: Path, loso: bool) -> dict:
    config = load_config(ROOT / "configs" / "default_detector.yaml", [f"output_dir={runs}"])
    config.model.options = {**config.model.options, **overrides}
    config.name = name.replace(" ", "_").replace(",", "")
    started = time.perf_counter()
    result = train(config, progress=False, test=False, report=False)
    row = {"variant": name, "val_roc_auc": result.best_val["roc_auc"], "val_accuracy": result.best_val["accuracy"]}
    if loso:
        summary = leave_one_source_out(config, runs / f"{config.name}-loso")
        mixed = [r["roc_auc"] for r in summary["rows"] if r.get("roc_auc") is not None]
        row |= {"loso_mean_accuracy": summary["mean_accuracy"], "loso_mixed_roc_auc": float(np.mean(mixed)),
                "loso": {r["held_out"]: (r.get("accuracy"), r.get("roc_auc")) for r in summary["rows"]}}
    row["minutes"] = (time.perf_counter() - started) / 60
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/pool-variants"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--no-loso", action="store_true", help="validation split only")
    args = parser.parse_args()
    rows = []
    for name in args.only or VARIANTS:
        rows.append(run(name, VARIANTS[name], args.runs, not args.no_loso))
        print(json.dumps(rows[-1]), flush=True)
    table = markdown_table(rows, COLUMNS)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
