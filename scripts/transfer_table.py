"""Score trained models on image sets they never saw, as center crops and as downscaled whole images.

    python scripts/transfer_table.py --model cifake_cnn=RUN/best.safetensors [--model ...] \\
        --data ../shared/data/genimage-256 [--data ...] --out docs/transfer.md

Each model sees every image twice: its usual center crop (crop-sized pixels from the
middle, never resampled) and the image downscaled to the crop size (shorter side to the
crop, then its centre: ``evaluate --resize``, what work on 32x32 CIFAKE models does with
larger pictures). A cell gives
the accuracy and how many of the set's images the model calls synthetic. Each
evaluation's files go to --work/<model>/<view>/<set>.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from synthdet.data.sources import records_from_arguments
from synthdet.evaluation.evaluate import evaluate_records, write_evaluation
from synthdet.evaluation.tables import fmt
from synthdet.inference.detector import Detector

VIEWS = {"center crop": False, "downscaled": True}  # view -> evaluate_records(resize=...)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=CHECKPOINT (repeatable)")
    parser.add_argument("--data", action="append", required=True, type=Path, help="labelled image folder (repeatable)")
    parser.add_argument("--out", type=Path, help="markdown table (default: print it)")
    parser.add_argument("--work", type=Path, default=Path("runs/transfer"))
    args = parser.parse_args()

    sets = {folder.name: records_from_arguments([folder]) for folder in args.data}
    header = ["model", "view"] + [f"{name} ({sum(r.label == 0 for r in records)} real, "
                                  f"{sum(r.label == 1 for r in records)} synthetic)" for name, records in sets.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for spec in args.model:
        name, _, checkpoint = spec.partition("=")
        detector = Detector.load(checkpoint)
        for view, resize in VIEWS.items():
            cells = []
            for set_name, records in sets.items():
                result = evaluate_records(detector, records, resize=resize)
                write_evaluation(result, args.work / name / view.replace(" ", "-") / set_name, figures=False)
                called = sum(p.label == "synthetic" for _, p in result.scored())
                cells.append(f"{fmt(result.metrics['accuracy'])} ({called}/{result.metrics['n']})")
            lines.append(f"| {name} | {view} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    table = "\n".join(lines) + "\n\nCells: accuracy (images called synthetic / images scored).\n"
    if args.out:
        args.out.write_text(table)
    else:
        print(table)


if __name__ == "__main__":
    main()
