"""Numbers and tables as people read them: shared by the CLI, the report and the protocols."""

from __future__ import annotations

import math


def fmt(value) -> str:
    """0.97312 -> 0.973, None or NaN -> n/a, anything else as str()."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: list[dict], columns: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


#: Columns of a protocol's table: one row per held-out source (or fold).
PROTOCOL_COLUMNS = ("held_out", "n", "n_real", "n_synthetic", "accuracy", "roc_auc", "mean_p_synthetic", "status")


def protocol_summary_line(summary: dict) -> str:
    """'mean accuracy 0.912 ± 0.041; mean ROC-AUC n/a' (over held-out units, ± population std)."""

    def mean_std(key):
        mean, std = summary[f"mean_{key}"], summary[f"std_{key}"]
        return "n/a" if mean is None else f"{fmt(mean)} ± {fmt(std or 0.0)}"

    return f"mean accuracy {mean_std('accuracy')}; mean ROC-AUC {mean_std('roc_auc')}"


def protocol_markdown(summary: dict) -> str:
    return (f"# {summary['protocol']}\n\n" + markdown_table(summary["rows"], PROTOCOL_COLUMNS)
            + f"\n\n{protocol_summary_line(summary)} (over held-out units)\n")
