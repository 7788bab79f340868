"""One report per run: ``report.md`` (images beside it) and a self-contained ``report.html``.

The report gathers what a run folder holds, whichever command produced it: config, data
summary and skipped files, training curves, calibration, evaluation tables and figures
(the folder itself, ``test/`` or ``held_out/``), robustness (the folder or ``robustness/``)
and protocol results. A training run that lacks a file it should have gets a "Missing"
section naming it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from synthdet.data.sources import IgnoredFiles
from synthdet.evaluation.evaluate import GALLERIES, PROVENANCE_COLUMNS, SOURCE_COLUMNS, provenance_sentence
from synthdet.evaluation.tables import PROTOCOL_COLUMNS, fmt, markdown_table, protocol_summary_line
from synthdet.rundir import RunDir, write_atomic


@dataclass
class Paragraph:
    text: str

    def markdown(self, base: Path) -> str:
        return self.text

    def html(self) -> str:
        return f"<p>{html.escape(self.text)}</p>"


@dataclass
class Code:
    text: str

    def markdown(self, base: Path) -> str:
        return "```yaml\n" + self.text.rstrip() + "\n```"

    def html(self) -> str:
        return f"<pre>{html.escape(self.text)}</pre>"


@dataclass
class Table:
    columns: tuple[str, ...]
    rows: list[dict]

    def markdown(self, base: Path) -> str:
        return markdown_table(self.rows, self.columns)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        cells = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(row.get(c)))}</td>" for c in self.columns) + "</tr>"
                        for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>"


@dataclass
class Figure:
    path: Path
    caption: str

    def markdown(self, base: Path) -> str:
        return f"![{self.caption}]({self.path.relative_to(base).as_posix()})"

    def html(self) -> str:
        data = base64.b64encode(self.path.read_bytes()).decode("ascii")
        caption = html.escape(self.caption)
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>")


Block = Paragraph | Code | Table | Figure


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def build_report(run_dir: Path) -> list[Section]:
    run = RunDir(run_dir)
    sections: list[Section] = []
    for builder in (_config, _data, _training, _calibration, _evaluations, _robustness, _protocol, _missing,
                    _warnings):
        sections.extend(builder(run))
    return sections


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    run = RunDir(run_dir)
    sections = build_report(run.root)
    if not sections:
        raise FileNotFoundError(f"{run.root}: no run, evaluation, robustness or protocol results to report")
    title = f"synthdet report: {run.root.resolve().name}"
    write_atomic(run.report_md, _markdown(title, sections, run.root))
    write_atomic(run.report_html, _html(title, sections))
    return run.report_md, run.report_html


# --- sections -------------------------------------------------------------------------------


def _config(run: RunDir) -> list[Section]:
    return [Section("Configuration", [Code(run.config.read_text())])] if run.config.is_file() else []


def _data(run: RunDir) -> list[Section]:
    blocks: list[Block] = []
    if run.summary.is_file():
        summary = json.loads(run.summary.read_text())
        rows = [{"source": source, "split": split, "real": counts.get("real", 0),
                 "synthetic": counts.get("synthetic", 0)}
                for source, splits in summary.get("data", {}).items() for split, counts in splits.items()]
        blocks.append(Table(("source", "split", "real", "synthetic"), rows))
        ignored = IgnoredFiles(**summary.get("ignored", {}))
        if ignored.total:
            blocks.append(Paragraph(f"Scanning the source folders {ignored} (names starting with a dot, or "
                                    "not an image extension)."))
        rules = [{"source": source, "how the splits were made": rule}
                 for source, rule in summary.get("split_rules", {}).items()]
        if rules:
            blocks.append(Table(("source", "how the splits were made"), rules))
    skipped = _read_csv(run.skipped)
    if run.summary.is_file() or skipped:
        blocks.append(Paragraph(f"{len(skipped)} file(s) skipped" + (":" if skipped else ".")))
        if skipped:
            blocks.append(Table(("path", "reason", "stage"), skipped))
    return [Section("Data", blocks)] if blocks else []


def _training(run: RunDir) -> list[Section]:
    if not run.metrics_log.is_file():
        return []
    history = [json.loads(line) for line in run.metrics_log.read_text().splitlines() if line.strip()]
    columns = tuple(k for k in ("candidate", "C", "epoch", "lr", "train_loss", "train_accuracy", "val_loss",
                                "val_accuracy", "val_roc_auc", "seconds") if history and k in history[0])
    blocks: list[Block] = [Table(columns, history)]
    if run.summary.is_file():
        best = json.loads(run.summary.read_text())
        chosen = "candidate" if "candidate" in history[0] else "epoch"
        blocks.insert(0, Paragraph(f"Best {chosen} {best['best_epoch']}, chosen on the validation split by "
                                   f"{best['select_metric']}; the test split played no part."))
    blocks += _figure(run.curves, "Loss and accuracy per epoch")
    return [Section("Training", blocks)]


def _calibration(run: RunDir) -> list[Section]:
    if not run.calibration.is_file():
        return []
    c = json.loads(run.calibration.read_text())
    text = (f"Temperature {c['temperature']:.3g} fitted on {c['n']} validation images: ECE (15 bins) "
            f"{c['ece_before']:.4f} before, {c['ece_after']:.4f} after; NLL {c['nll_before']:.4f} -> "
            f"{c['nll_after']:.4f}. Decision threshold {c['threshold']:.4g} on the calibrated probability"
            + (f", chosen for a {c['target_fpr']:g} false-positive rate (validation FPR {fmt(c['val_fpr'])}, "
               f"TPR {fmt(c['val_tpr'])})." if c.get("target_fpr") else "."))
    if c.get("at_bound"):
        text += (" The fit reached its search bound: the validation split gives no usable calibration signal "
                 "(perfectly separated), so the temperature stays 1.")
    return [Section("Calibration", [Paragraph(text), *_figure(run.reliability, "Reliability diagram")])]


def _evaluations(run: RunDir) -> list[Section]:
    sections = []
    for folder, title in ((run, "Evaluation"), (run.test, "Test split"), (run.held_out, "Held-out source")):
        if not folder.metrics.is_file():
            continue
        metrics = json.loads(folder.metrics.read_text())
        m = metrics["overall"]
        overall = {k: m.get(k) for k in ("n", "accuracy", "precision", "recall", "f1", "roc_auc", "average_precision")}
        ignored = IgnoredFiles(**metrics.get("ignored", {}))
        blocks: list[Block] = [
            Table(SOURCE_COLUMNS, metrics["per_source"]),
            Paragraph(f"Mean accuracy over sources: {fmt(metrics['mean_source_accuracy'])}. "
                      f"Threshold {fmt(m['threshold'])}; {len(metrics['skipped'])} file(s) could not be read"
                      + (f"; scanning the folders {ignored}." if ignored.total else ".")
                      + (f" Each image was scored on: {metrics['view']}." if "view" in metrics else "")),
            Table(tuple(overall), [overall]),
        ]
        provenance = metrics.get("provenance")
        if provenance:
            blocks.append(Paragraph("Provenance (what the files declare: C2PA, IPTC source type, generator settings, "
                                    f"EXIF), files per label. {provenance_sentence(provenance)}"))
            if provenance["rows"]:
                blocks.append(Table(PROVENANCE_COLUMNS, provenance["rows"]))
        for name, caption in (("confusion", "Confusion matrix"), ("roc", "ROC curve"), ("pr", "Precision-recall")):
            blocks += _figure(folder.figure(name), caption)
        for name, (_, _, caption) in GALLERIES.items():
            blocks += _figure(folder.figure(name), caption)
        sections.append(Section(title, blocks))
    return sections


def _robustness(run: RunDir) -> list[Section]:
    """A sweep folder itself, or a training run with its sweep filed under ``robustness/``."""
    for folder in (run, run.robustness_sweep):
        if folder.robustness.is_file():
            rows = json.loads(folder.robustness.read_text())
            return [Section("Robustness", [
                Table(("perturbation", "level", "n", "accuracy", "roc_auc", "mean_p_synthetic"), rows),
                *_figure(folder.figure("robustness"), "Accuracy and ROC-AUC"),
            ])]
    return []


def _protocol(run: RunDir) -> list[Section]:
    if not run.protocol.is_file():
        return []
    summary = json.loads(run.protocol.read_text())
    return [Section(f"Protocol: {summary['protocol']}", [
        Table(PROTOCOL_COLUMNS, summary["rows"]),
        Paragraph(protocol_summary_line(summary) + " (over held-out units)."),
    ])]


def _missing(run: RunDir) -> list[Section]:
    """Files a finished training run should hold but does not (a step failed or was skipped)."""
    if not run.is_training_run():
        return []
    expected = {run.summary: "training did not finish", run.best: "no checkpoint was saved",
                run.calibration: "calibration did not run", run.curves: "no training curves",
                run.test.metrics: "the test split was not evaluated (or is empty)"}
    absent = [f"{path.relative_to(run.root).as_posix()}: {why}" for path, why in expected.items() if not path.is_file()]
    return [Section("Missing", [Paragraph("; ".join(absent) + ".")])] if absent else []


def _warnings(run: RunDir) -> list[Section]:
    """What could not be written (a figure, say) in this folder or its evaluations."""
    lines = []
    for folder, where in ((run, ""), (run.test, "test/: "), (run.held_out, "held_out/: ")):
        if folder.warnings.is_file():
            lines += [where + line for line in folder.warnings.read_text().splitlines() if line.strip()]
    return [Section("Warnings", [Paragraph(line) for line in lines])] if lines else []


def _figure(path: Path, caption: str) -> list[Block]:
    return [Figure(path, caption)] if path.is_file() else []


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
        out.extend(block.markdown(run_dir) for block in section.blocks)
    return "\n\n".join(out) + "\n"


def _html(title: str, sections: list[Section]) -> str:
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body.extend(block.html() for block in section.blocks)
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;"
             "overflow:auto}figure{display:inline-block;margin:0.5em}img{max-width:100%}"
             "figcaption{font-size:13px;color:#555;text-align:center}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
