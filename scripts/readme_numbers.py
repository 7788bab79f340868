"""Write the README's table of the default detector's numbers from docs/default_model.json.

    .venv/bin/python scripts/readme_numbers.py            # rewrite the table in README.md
    .venv/bin/python scripts/readme_numbers.py --check    # exit 1 when README.md's table is not what it would write

Run it after scripts/evaluate_default_model.py, which writes the JSON. The table, between
README.md's default-model-numbers markers, is the "Unseen sources" table's ROC-AUC and
accuracy per set, its mean row in bold, and the table's note.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synthdet.evaluation.tables import fmt

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- default-model-numbers:start -->", "<!-- default-model-numbers:end -->"
TABLE = "Unseen sources"


def numbers_table(tables: dict) -> str:
    """The README's block: set, images, ROC-AUC and accuracy of each row of the unseen-sources table."""
    table = tables[TABLE]
    lines = ["| set | images | ROC-AUC | accuracy |", "|---|---|---|---|"]
    for row in table["rows"]:
        cells = [row["set"], f"{row['n']:,}", fmt(row["roc_auc"]), fmt(row["accuracy"])]
        if row["set"].startswith("mean"):
            cells = [f"**{cell}**" for cell in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + (f"\n\n{table['note']}" if table.get("note") else "")


def with_numbers(readme: str, block: str) -> str:
    """``readme`` with ``block`` between the markers (each on a line of its own)."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block")
    head, rest = readme.split(START, 1)
    return f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "default_model.json")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when the table differs")
    args = parser.parse_args()
    readme = args.readme.read_text()
    updated = with_numbers(readme, numbers_table(json.loads(args.json.read_text())))
    if args.check:
        if updated != readme:
            sys.exit(f"{args.readme}: the default detector's numbers differ from {args.json}; "
                     "run scripts/readme_numbers.py")
    elif updated != readme:
        args.readme.write_text(updated)
        print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
