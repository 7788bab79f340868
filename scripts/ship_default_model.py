"""Package a trained probe as the shipped default detector, with its model card in the metadata.

    .venv/bin/python scripts/ship_default_model.py RUN_DIR [--evaluation docs/default_model.json]

Copies RUN_DIR/best.safetensors (head weights only: the CLIP backbone is named by key and
sha256, never copied) to src/synthdet/resources/default_detector.safetensors and adds
``training.card``: the pool's sources with their repositories, licences and generators,
the evaluation tables, and the known limitations. ``synthdet info`` prints the card.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path

from synthdet.checkpoint import read_metadata, read_tensors, save_checkpoint
from synthdet.inference.detector import DEFAULT_MODEL_FILE

ROOT = Path(__file__).resolve().parents[1]
PARTS = {"final": "final embedding", "tokens": "CLS token after each block", "spectrum": "spectrum statistics",
         "residual": "residual statistics"}
POOL_LICENCE = "no licence permitting redistribution; used to train only, no image is shipped"
#: the project's own pools and the licences their repositories state (each pool's .md has them per source)
PROJECT_POOLS = {ROOT / "pools" / "real-photos.csv": "CC0, MIT, non-commercial or none",
                 ROOT / "pools" / "modern-fakes.csv": "MIT, Apache-2.0 or none"}
LIMITATIONS = [
    "Trained on a public pool of about 10,600 images from 26 GitHub repositories: faces, ImageNet and BSDS "
    "photos, web photos, modern phone and camera photos (a third of them PNG), 2022-era diffusion and GAN "
    "outputs, 2023-2025 generators (SDXL, PixArt-alpha, Playground v2, Kandinsky 3, DreamShaper, GPT-4o, "
    "Nano Banana Pro, FLUX.1-schnell and -dev, Grok-2, Imagen 4, Midjourney v4/v5, DALL-E 2), Stable Diffusion "
    "art and a few GTA V frames: generators and cameras far from these are less likely to be recognized; "
    "photoreal images of the newest generators are few (about 300 people at work and 33 FLUX portraits).",
    "A frozen CLIP backbone describes content as much as traces: content that was synthetic-only or real-only "
    "in training (posters and infographics from chat generators, garments on beds) can sway a verdict. "
    "Per-source numbers, not the mean, say where it works.",
    "Scores one 224x224 center crop at native resolution (no resizing): scoring up to 4, 9 or 16 tiles did "
    "not beat it on the pool's validation split (docs/default_model_study.md); small images are reflect-padded, "
    "and the result says so in its note. Heavy JPEG compression, downscaling and blur move the scores (see "
    "the robustness table).",
    "Rendered (CG) frames are a small part of the pool (17 GTA V frames): sim-to-real users should train "
    "their own probe on their renders and photos (synthdet train with a probe config).",
]


def pool_sources(manifest: Path, used: dict[str, dict[str, int]]) -> list[dict]:
    """The sources the run trained on, with their repositories, licences, generators and image counts."""
    licences = {}
    for pool, stated in PROJECT_POOLS.items():
        with pool.open(newline="") as fh:
            licences.update({row["source"]: f"as each repository states it (pools/{pool.stem}.md: {stated}); used "
                                            "to train only, no image is shipped" for row in csv.DictReader(fh)})
    repos, generators = {}, defaultdict(set)
    with manifest.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["source"] not in used:
                continue
            repos[row["source"]] = row["repo"]
            if row["label"] == "synthetic" and row.get("generator"):
                generators[row["source"]].add(row["generator"])
    return [{"source": s, "repo": f"github.com/{repos[s]}",
             "licence": licences.get(s, POOL_LICENCE),
             "generators": sorted(generators[s]), "images": used[s]} for s in sorted(repos)]


def images_per_source(splits: Path) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    with splits.open(newline="") as fh:
        for row in csv.DictReader(fh):
            counts[row["source"]][row["label"]] += 1
    return {s: dict(c) for s, c in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="training run folder of configs/default_detector.yaml")
    parser.add_argument("--evaluation", type=Path, help="JSON written by scripts/evaluate_default_model.py")
    parser.add_argument("--manifest", type=Path, default=ROOT / "pool" / "manifest.csv")
    args = parser.parse_args()
    checkpoint = args.run / "best.safetensors"
    meta = read_metadata(checkpoint)
    options = meta.model.options
    parts = " + ".join(PARTS[p] for p in options.get("embedding", ["final"]) + options.get("low_level", []))
    card = {
        "title": "synthdet default detector",
        "summary": (f"A {options.get('head', 'linear')} probe on the frozen CLIP ViT-B/16 image encoder "
                    f"({parts}), "
                    "trained on synthdet's public pool with configs/default_detector.yaml; it tells real "
                    "photographs from generated or rendered images."),
        "sources": pool_sources(args.manifest, images_per_source(args.run / "splits.csv")),
        "evaluation": json.loads(args.evaluation.read_text()) if args.evaluation else {},
        "limitations": LIMITATIONS,
    }
    meta = meta.model_copy(update={"training": {**meta.training, "card": card}})
    out = Path(str(resources.files("synthdet.resources").joinpath(DEFAULT_MODEL_FILE)))
    save_checkpoint(out, read_tensors(checkpoint), meta)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
