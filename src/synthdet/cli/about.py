"""``synthdet info`` and ``synthdet demo``: what a model is, and synthdet end to end in a few minutes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from synthdet.cli.common import err, out
from synthdet.cli.data import demo_config
from synthdet.cli.evaluation import print_evaluation
from synthdet.config import config_from_dict, resolve_paths
from synthdet.data.sources import records_from_arguments
from synthdet.inference.detector import Detector, model_path
from synthdet.rundir import RunDir

#: The small public sets the demo scores with the default detector (cifake is 50,000 images).
PUBLIC_DEMO_SETS = ("chatgpt-gemini-small", "gan-diffusion-playground", "gan-examples", "genimage-256",
                    "unreal-vs-kinect")


def info(
    model: Optional[Path] = typer.Argument(None, help="checkpoint; default: the shipped detector"),
    as_json: bool = typer.Option(False, "--json", help="the raw metadata as JSON"),
):
    """A model's card: what it is, what it was trained on, how it scored, where it fails (--json: all metadata).

    The checkpoint's tensors are checked against its metadata too, so a broken one is an error (exit 2).
    """
    from synthdet.inference.onnx_export import load_onnx
    from synthdet.model_card import model_card
    from synthdet.network import check_checkpoint

    path = model_path(model)
    meta = load_onnx(path)[1] if path.suffix == ".onnx" else check_checkpoint(path)
    print(meta.model_dump_json(indent=2) if as_json else model_card(meta))


def demo(
    out_dir: Path = typer.Option(Path("synthdet-demo"), "--out", help="where toy data and the run go"),
    images_per_source: int = typer.Option(300, help="toy images per source (4 sources)"),
    epochs: Optional[int] = typer.Option(None, help="override the demo's epochs"),
    public: Path = typer.Option(Path("../shared/data"), help="labelled public sets the default detector is "
                                "scored on (skipped when absent)"),
):
    """Train on toy data, then score public images with the shipped default detector (a few minutes on 2 CPUs).

    The toy run shows the training pipeline end to end; the default detector (fetching its
    CLIP backbone on first use) shows what a real detector does on images it never saw.
    """
    from synthdet import pipeline
    from synthdet.data.toy import write_toy_dataset

    started = time.perf_counter()
    out.print(f"writing toy dataset to {out_dir / 'data'} ...")
    raw = demo_config()
    raw["data"]["sources"] = write_toy_dataset(out_dir / "data", images_per_source)
    raw["output_dir"] = str(out_dir / "runs")
    if epochs:
        raw["train"]["epochs"] = epochs
    result = pipeline.train(resolve_paths(config_from_dict(raw, "demo config"), Path.cwd()))
    print_evaluation(result.test, title="Demo: test split of the toy data (best checkpoint)")
    out.print(f"report: {RunDir(result.run_dir).report_html}")
    out.print(f"checkpoint: {result.best_checkpoint}")
    sets = [p for p in sorted(public.iterdir()) if p.is_dir() and p.name in PUBLIC_DEMO_SETS] if public.is_dir() else []
    if sets:
        from synthdet.evaluation.evaluate import evaluate_records, write_evaluation

        detector = Detector.load(None, log=err.print)
        evaluation = evaluate_records(detector, records_from_arguments(sets), workers=2, progress=True)
        write_evaluation(evaluation, out_dir / "default-detector")
        print_evaluation(evaluation, title=f"The default detector on public images it never saw ({public})")
    else:
        out.print(f"{public} not found: skipped scoring public images with the default detector")
    out.print(f"({time.perf_counter() - started:.0f} s in all)  try:  synthdet predict PHOTO.jpg  |  synthdet info")
