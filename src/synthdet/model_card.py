"""A checkpoint's card, as ``synthdet info`` prints it: what the model is, what it was trained
on, how it scored, and where it is known to fail.

Everything comes from the checkpoint's own metadata; a shipped model's metadata also has a
``training.card`` section (sources and licences, unseen-set scores, limitations) written
when it was packaged (scripts/ship_default_model.py).
"""

from __future__ import annotations

from synthdet.checkpoint import CheckpointMeta
from synthdet.evaluation.tables import fmt, markdown_table


def model_card(meta: CheckpointMeta) -> str:
    training = meta.training or {}
    card = training.get("card", {})
    lines = [f"# {card.get('title', 'synthdet model')}", ""]
    if card.get("summary"):
        lines += [card["summary"], ""]
    lines += ["## Model", "", *_model_lines(meta), ""]
    lines += ["## Decision", "",
              f"- threshold {meta.threshold:.4g} on P(synthetic), temperature {meta.temperature:.4g}"
              + (f" fitted on {meta.calibration['n']} validation images (ECE {meta.calibration['ece_before']:.3f} -> "
                 f"{meta.calibration['ece_after']:.3f})" if meta.calibration else " (not calibrated)"), ""]
    data = training.get("data", {})
    if data:
        rows = [{"source": source, **{split: sum(counts.values()) for split, counts in splits.items()},
                 "real": sum(c.get("real", 0) for c in splits.values()),
                 "synthetic": sum(c.get("synthetic", 0) for c in splits.values())}
                for source, splits in data.items()]
        lines += ["## Training data", "", markdown_table(rows, ("source", "real", "synthetic", "train", "val", "test")),
                  ""]
    for source in card.get("sources", []):
        lines.append(f"- {source['source']}: {source['repo']} ({source['licence']}); generators: "
                     f"{', '.join(source['generators']) or 'none (real photos)'}")
    if card.get("sources"):
        lines.append("")
    if training.get("val"):
        val = training["val"]
        lines += ["## Validation", "", f"accuracy {fmt(val.get('accuracy'))}, ROC-AUC {fmt(val.get('roc_auc'))} "
                  f"on {val.get('n')} validation images (the split it was selected on)", ""]
    for title, table in card.get("evaluation", {}).items():
        lines += [f"## {title}", "", markdown_table(table["rows"], tuple(table["columns"])), ""]
        if table.get("note"):
            lines += [table["note"], ""]
    if card.get("limitations"):
        lines += ["## Limitations", "", *(f"- {item}" for item in card["limitations"]), ""]
    return "\n".join(lines).rstrip() + "\n"


def _model_lines(meta: CheckpointMeta) -> list[str]:
    spec = meta.model
    lines = [f"- {spec.name} {spec.options or ''}".rstrip(),
             f"- input: {'+'.join(meta.features.representations)}, crop {meta.crop[1]}x{meta.crop[0]}, view "
             f"{meta.view.mode + (f' (up to {meta.view.tiles})' if meta.view.mode == 'tiles' else '') if meta.view else 'tiles to predict, center crop to evaluate'}"]
    if spec.pretrained:
        lines.append(f"- frozen backbone weights: {spec.pretrained.weights} (tensors sha256 {spec.pretrained.identity[:16]}...; "
                     f"fetched by `synthdet weights get` on first use)")
    lines.append(f"- synthdet {meta.synthdet_version}, created {meta.created}")
    return lines
