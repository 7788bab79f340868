"""One report per run: ``report.md`` (images beside it) and a self-contained ``report.html``.

The report gathers what a run directory holds, whichever command produced it: config,
data summary and skipped files, training curves, calibration, evaluation tables and
figures (the directory itself, ``test/`` or ``held_out/``), robustness and protocol
results. Sections whose files are absent are left out.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from synthdet.evaluation.evaluate import SOURCE_COLUMNS, fmt, markdown_table
from synthdet.evaluation.protocols import PROTOCOL_COLUMNS, protocol_summary_line

GALLERIES = ("gallery_real_correct", "gallery_real_as_synthetic", "gallery_synthetic_correct",
             "gallery_synthetic_as_real")


@dataclass
class Section:
    title: str
    blocks: list[tuple] = field(default_factory=list)  # ("p", text) | ("table", cols, rows) | ("img", path, caption) | ("code", text)


def build_report(run_dir: Path) -> list[Section]:
    sections: list[Section] = []
    for builder in (_config, _data, _training, _calibration, _evaluations, _robustness, _protocol):
        sections.extend(builder(run_dir))
    return sections


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    sections = build_report(run_dir)
    if not sections:
        raise FileNotFoundError(f"{run_dir}: no run, evaluation, robustness or protocol results to report")
    title = f"synthdet report: {run_dir.resolve().name}"
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text(_markdown(title, sections, run_dir))
    html_path.write_text(_html(title, sections))
    return md_path, html_path


# --- sections -------------------------------------------------------------------------------


def _config(run_dir: Path) -> list[Section]:
    path = run_dir / "config.yaml"
    return [Section("Configuration", [("code", path.read_text())])] if path.is_file() else []


def _data(run_dir: Path) -> list[Section]:
    summary_path = run_dir / "summary.json"
    blocks = []
    if summary_path.is_file():
        data = json.loads(summary_path.read_text()).get("data", {})
        rows = [{"source": source, "split": split, "real": counts.get("real", 0),
                 "synthetic": counts.get("synthetic", 0)}
                for source, splits in data.items() for split, counts in splits.items()]
        blocks.append(("table", ("source", "split", "real", "synthetic"), rows))
    skipped = _read_csv(run_dir / "skipped.csv")
    if summary_path.is_file() or skipped:
        blocks.append(("p", f"{len(skipped)} file(s) skipped" + (":" if skipped else ".")))
        if skipped:
            blocks.append(("table", ("path", "reason", "stage"), skipped))
    return [Section("Data", blocks)] if blocks else []


def _training(run_dir: Path) -> list[Section]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    columns = tuple(k for k in ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                "val_roc_auc", "seconds") if history and k in history[0])
    blocks = [("table", columns, history)]
    summary = run_dir / "summary.json"
    if summary.is_file():
        best = json.loads(summary.read_text())
        blocks.insert(0, ("p", f"Best epoch {best['best_epoch']}, chosen on the validation split by "
                               f"{best['select_metric']}; the test split played no part."))
    blocks += _image(run_dir / "curves.png", "Loss and accuracy per epoch")
    return [Section("Training", blocks)]


def _calibration(run_dir: Path) -> list[Section]:
    path = run_dir / "calibration.json"
    if not path.is_file():
        return []
    c = json.loads(path.read_text())
    text = (f"Temperature {c['temperature']:.3g} fitted on {c['n']} validation images: ECE (15 bins) "
            f"{c['ece_before']:.4f} before, {c['ece_after']:.4f} after; NLL {c['nll_before']:.4f} -> "
            f"{c['nll_after']:.4f}. Decision threshold {c['threshold']:.4g} on the calibrated probability"
            + (f", chosen for a {c['target_fpr']:g} false-positive rate (validation FPR {fmt(c['val_fpr'])}, "
               f"TPR {fmt(c['val_tpr'])})." if c.get("target_fpr") else "."))
    if c.get("at_bound"):
        text += " The temperature sits at its search bound: the validation split gives no usable calibration signal."
    return [Section("Calibration", [("p", text), *_image(run_dir / "reliability.png", "Reliability diagram")])]


def _evaluations(run_dir: Path) -> list[Section]:
    sections = []
    for directory, title in ((run_dir, "Evaluation"), (run_dir / "test", "Test split"),
                             (run_dir / "held_out", "Held-out source")):
        metrics_path = directory / "metrics.json"
        if not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        m = metrics["overall"]
        overall = {k: m.get(k) for k in ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision")}
        blocks = [
            ("table", SOURCE_COLUMNS, metrics["per_source"]),
            ("p", f"Mean accuracy over sources: {fmt(metrics['mean_source_accuracy'])}. "
                  f"Threshold {fmt(m['threshold'])}; {len(metrics['skipped'])} file(s) could not be read."),
            ("table", tuple(overall), [overall]),
        ]
        for name, caption in (("confusion", "Confusion matrix"), ("roc", "ROC curve"), ("pr", "Precision-recall")):
            blocks += _image(directory / f"{name}.png", caption)
        for name in GALLERIES:
            blocks += _image(directory / f"{name}.png", name.replace("gallery_", "").replace("_", " "))
        sections.append(Section(title, blocks))
    return sections


def _robustness(run_dir: Path) -> list[Section]:
    for directory in (run_dir, run_dir / "robustness"):
        path = directory / "robustness.json"
        if path.is_file():
            rows = json.loads(path.read_text())
            blocks = [("table", ("perturbation", "level", "n", "accuracy", "roc_auc", "mean_p_synthetic"), rows)]
            return [Section("Robustness", blocks + _image(directory / "robustness.png", "Accuracy and ROC-AUC"))]
    return []


def _protocol(run_dir: Path) -> list[Section]:
    path = run_dir / "protocol.json"
    if not path.is_file():
        return []
    summary = json.loads(path.read_text())
    return [Section(f"Protocol: {summary['protocol']}", [
        ("table", PROTOCOL_COLUMNS, summary["rows"]),
        ("p", protocol_summary_line(summary) + " (over held-out units)."),
    ])]


def _image(path: Path, caption: str) -> list[tuple]:
    return [("img", path, caption)] if path.is_file() else []


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# --- renderers ------------------------------------------------------------------------------


def _markdown(title: str, sections: list[Section], run_dir: Path) -> str:
    out = [f"# {title}"]
    for section in sections:
        out.append(f"## {section.title}")
        for block in section.blocks:
            kind = block[0]
            if kind == "p":
                out.append(block[1])
            elif kind == "code":
                out.append("```yaml\n" + block[1].rstrip() + "\n```")
            elif kind == "table":
                out.append(markdown_table(block[2], block[1]))
            elif kind == "img":
                out.append(f"![{block[2]}]({block[1].relative_to(run_dir).as_posix()})")
    return "\n\n".join(out) + "\n"


def _html(title: str, sections: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            kind = block[0]
            if kind == "p":
                body.append(f"<p>{html.escape(block[1])}</p>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(block[1])}</pre>")
            elif kind == "table":
                _, columns, rows = block
                head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                cells = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c)))}</td>" for c in columns) + "</tr>"
                    for row in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(block[1].read_bytes()).decode("ascii")
                caption = html.escape(block[2])
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                            f"<figcaption>{caption}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;"
             "overflow:auto}figure{display:inline-block;margin:0.5em}img{max-width:100%}"
             "figcaption{font-size:13px;color:#555;text-align:center}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
