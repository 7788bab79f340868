"""How close synthdet's input pipeline comes to the hardware's limits, and what batching buys.

    python benchmarks/throughput.py                      # full-HD JPEGs and 32x32 PNGs, 10-20 min on 2 cores
    python benchmarks/throughput.py --quick              # fewer images and repeats

For each image set it prints, as images/second (median of --repeats runs):
  1. decode bound:   the loader alone (decode + crop + collate, same workers)
  2. compute bound:  the network alone on ready uint8 batches of the same size
  3. end to end:     the `synthdet benchmark` path (evaluate_records)
  4. one at a time:  the original scripts' way: open, transform, Fourier, model(x[None])
and the ratios X = end_to_end / min(decode, compute) and Y = end_to_end / one_at_a_time.
Then: the runtime switches (channels-last, torch.compile, bfloat16) on the compute bound,
training epoch images/s against forward+backward on ready tensors, and the peak memory
of `synthdet predict` on 200 and on 2000 images.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from PIL import Image

from synthdet.checkpoint import CheckpointMeta, ModelSpec
from synthdet.config import SourceConfig, load_config
from synthdet.data.loader import ImageDataset, make_loader
from synthdet.data.sources import records_from_arguments
from synthdet.data.toy import toy_image
from synthdet.data.transforms import EvalTransform, center_crop
from synthdet.evaluation.evaluate import evaluate_records
from synthdet.features.spectral import fft_magnitude
from synthdet.inference.detector import Detector
from synthdet.inference.scoring import forward_views
from synthdet.network import build_network, save_network

ROOT = Path(__file__).resolve().parents[1]
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def rate(fn, images: int, repeats: int) -> float:
    """Median images/second of ``fn`` (which processes ``images`` images) over ``repeats`` runs."""
    fn()  # warm-up: worker start, allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def make_images(folder: Path, n: int, size: tuple[int, int], suffix: str) -> list[Path]:
    """``n`` toy camera and render images (width x height), half each, written once and reused."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{'camera' if i % 2 else 'render'}_{i:05d}{suffix}"
        if not path.exists():
            pixels = toy_image(np.random.default_rng(i), "terrain" if i % 4 < 2 else "shapes", i % 2 == 1,
                               size[1], size[0])
            Image.fromarray(pixels).save(path, quality=92)  # (PNG ignores quality)
        paths.append(path)
    return paths


def make_checkpoint(config, path: Path) -> Path:
    """An untrained network of ``config`` saved as a checkpoint: speed does not depend on weights."""
    net = build_network(config.features, config.model.name, config.model.options)
    meta = CheckpointMeta(model=ModelSpec(name=config.model.name, in_chans=net.features.out_channels),
                          features=config.features, crop=config.data.crop)
    return save_network(path, net, meta)


def one_at_a_time(detector: Detector, paths: list[Path]) -> None:
    """The original inference script, per image: PIL open, center crop, ToTensor, Normalize, FFT, model."""
    height, width = detector.crop
    backbone, normalize = detector.net.backbone, detector.net.normalize
    with torch.no_grad():
        for path in paths:
            image = Image.open(path).convert("RGB")
            pixels = center_crop(np.asarray(image), height, width)
            x = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255
            x = ((x - IMAGENET_MEAN) / IMAGENET_STD).unsqueeze(0)
            backbone(normalize(fft_magnitude(x)))


def pipeline_numbers(name: str, config, paths: list[Path], work: Path, args) -> dict:
    ckpt = make_checkpoint(config, work / f"{name}.safetensors")
    detector = Detector.load(ckpt, "cpu", **args.runtime)
    baseline = Detector.load(ckpt, "cpu")  # the original scripts knew no runtime switches
    records = records_from_arguments([paths[0].parent], label="real")
    n = len(records)
    loader = make_loader(ImageDataset([r.path for r in records], EvalTransform(config.data.crop)),
                         args.batch_size, args.workers)
    ready = next(iter(loader)).images
    batches = max(1, n // len(ready))

    def decode():
        for _ in loader:
            pass

    def compute():
        for _ in range(batches):
            forward_views(detector.runner, ready, detector.device, precision=detector.precision)

    def end_to_end():
        evaluate_records(detector, records, batch_size=args.batch_size, workers=args.workers)

    numbers = {
        "decode": rate(decode, n, args.repeats),
        "compute": rate(compute, batches * len(ready), args.repeats),
        "end_to_end": rate(end_to_end, n, args.repeats),
        "one_at_a_time": rate(lambda: one_at_a_time(baseline, paths[: args.baseline_images]),
                              min(n, args.baseline_images), args.repeats),
    }
    numbers["X"] = numbers["end_to_end"] / min(numbers["decode"], numbers["compute"])
    numbers["Y"] = numbers["end_to_end"] / numbers["one_at_a_time"]
    print(f"\n== {name}: {n} images, crop {config.data.crop[1]}x{config.data.crop[0]}, "
          f"{'+'.join(config.features.representations)} {config.model.name}, batch {args.batch_size}, "
          f"{args.workers} decode workers, {torch.get_num_threads()} torch threads, runtime {args.runtime or 'fp32'}")
    for key in ("decode", "compute", "end_to_end", "one_at_a_time"):
        print(f"  {key:>14}: {numbers[key]:8.1f} images/s")
    print(f"  end_to_end / min(decode_bound, compute_bound) = {numbers['X']:.2f}")
    # Each bound is measured with the whole machine; end to end, decoding and the network
    # share the same cores, so when both bounds are close the reachable rate is lower.
    shared = 1 / (1 / numbers["decode"] + 1 / numbers["compute"])
    print(f"  (decode and compute sharing the cores: {shared:.1f} images/s; end_to_end / that = "
          f"{numbers['end_to_end'] / shared:.2f})")
    print(f"  end_to_end / one_at_a_time = {numbers['Y']:.2f}")
    return {"ckpt": ckpt, "ready": ready, **numbers}


def runtime_switches(ckpt: Path, ready: torch.Tensor, repeats: int) -> None:
    """Compute bound under each runtime switch, and how far bf16 moves the probabilities."""
    print(f"\n== runtime switches (compute bound, batch {len(ready)})")
    switches = [("fp32", {}), ("fp32 channels_last", {"channels_last": True}), ("fp32 torch.compile", {"compile": True})]
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        switches += [("bf16", {"precision": "bf16"}), ("bf16 channels_last", {"precision": "bf16", "channels_last": True})]
    else:  # emulated bfloat16 is several times slower than fp32: minutes of waiting to learn nothing
        print(f"  {'bf16':>20}: skipped (this CPU has no native bfloat16: {torch.backends.cpu.get_cpu_capability()})")
    reference = None
    for label, runtime in switches:
        detector = Detector.load(ckpt, "cpu", **runtime)

        def run(detector=detector):
            return forward_views(detector.runner, ready, detector.device, precision=detector.precision)

        try:
            speed = rate(run, len(ready), repeats)
        except Exception as exc:  # e.g. torch.compile without a working C++ toolchain
            print(f"  {label:>20}: unavailable ({type(exc).__name__}: {str(exc)[:80]})")
            continue
        probs = torch.softmax(run(), 1)[:, 1]
        reference = probs if reference is None else reference
        print(f"  {label:>20}: {speed:8.1f} images/s   max |dP| vs fp32 {float((probs - reference).abs().max()):.1e}")


def training_numbers(config, paths: list[Path], work: Path, args) -> None:
    """Images/second of training epochs against forward+backward alone on ready tensors."""
    from synthdet.pipeline import train

    half = len(paths) // 2
    folders = {}
    for label, subset in (("real", paths[:half]), ("synthetic", paths[half:])):
        folders[label] = work / f"train-{label}"
        shutil.rmtree(folders[label], ignore_errors=True)  # no links left from a run with another --n
        folders[label].mkdir()
        for p in subset:
            (folders[label] / p.name).symlink_to(p)
    config = config.model_copy(deep=True)
    config.data.sources = [
        SourceConfig(name="real", path=folders["real"], label="real", split="train"),
        SourceConfig(name="synthetic", path=folders["synthetic"], label="synthetic", split="train"),
        SourceConfig(name="val", path=folders["real"], label="real", split="val", max_images=2),
    ]
    # Measured like the bound below: a warm-up epoch, then the median of the same number of repeats.
    repeats = max(1, args.repeats - 1)
    config.data.workers, config.train.batch_size = args.workers, args.batch_size
    config.train.epochs = 1 + repeats
    config.output_dir, config.name = work / "runs", "throughput"
    result = train(config, progress=False, test=False, report=False)
    epoch = result.history[-1]
    epoch_rate = statistics.median(h["train_images"] / h["train_seconds"] for h in result.history[1:])

    net = build_network(config.features, config.model.name, config.model.options)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    ready = torch.randint(0, 256, (args.batch_size, 3, *config.data.crop), dtype=torch.uint8)
    labels = torch.arange(args.batch_size) % 2
    steps = max(1, epoch["train_images"] // args.batch_size)

    def fwd_bwd():
        net.train()
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(net(ready), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    bound = rate(fwd_bwd, steps * args.batch_size, repeats)
    print(f"\n== training ({epoch['train_images']} images per epoch, batch {args.batch_size})")
    print(f"  epoch (median of {repeats} after a warm-up epoch): {epoch_rate:.1f} images/s; "
          f"forward+backward on ready tensors: {bound:.1f} images/s")
    print(f"  epoch / forward_backward = {epoch_rate / bound:.2f}")


def peak_memory(ckpt: Path, folder: Path) -> tuple[float, float]:
    """Peak RSS (MB) of `synthdet predict --csv` on a folder: main process, and with its workers."""
    proc = subprocess.Popen([sys.executable, "-m", "synthdet", "predict", "-m", str(ckpt), str(folder), "--csv"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    main_peak = total_peak = 0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            main = watched.memory_info().rss
            total = main + sum(c.memory_info().rss for c in watched.children(recursive=True))
        except psutil.Error:
            break
        main_peak, total_peak = max(main_peak, main), max(total_peak, total)
        time.sleep(0.05)
    if proc.wait() != 0:
        raise RuntimeError(f"predict failed on {folder}")
    return main_peak / 2**20, total_peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "maritime_fourier_resnet18.yaml")
    parser.add_argument("--n", type=int, default=64, help="full-HD JPEGs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-images", type=int, default=24, help="images the slow baseline scores")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "synthdet-throughput")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="override the config's crop")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    args.runtime = {k: v for k, v in (("precision", args.precision), ("channels_last", args.channels_last),
                                      ("compile", args.compile)) if v and v != "fp32"}
    if args.quick:
        args.n, args.repeats, args.baseline_images = 16, 1, 8

    config = load_config(args.config)
    if args.crop:
        config.data.crop = tuple(args.crop)
    full_hd = make_images(args.work / "full_hd", args.n, (1920, 1080), ".jpg")
    tiny = make_images(args.work / "tiny", 8192 if not args.quick else 1024, (32, 32), ".png")
    print(f"torch {torch.__version__}, {psutil.cpu_count()} CPUs, config {args.config.name}")

    hd = pipeline_numbers("full-HD JPEG", config, full_hd, args.work, args)
    tiny_config = config.model_copy(deep=True)
    tiny_config.data.crop = (32, 32)  # the same network at the images' native size
    small = pipeline_numbers("32x32 PNG", tiny_config, tiny, args.work,
                             argparse.Namespace(**{**vars(args), "batch_size": 256, "baseline_images": 256}))
    runtime_switches(hd["ckpt"], hd["ready"], args.repeats)
    training_numbers(config, full_hd, args.work, args)

    memory_images = make_images(args.work / "memory", 2000 if not args.quick else 400, (96, 96), ".jpg")
    subset = args.work / "memory-200"
    subset.mkdir(exist_ok=True)
    for p in memory_images[: len(memory_images) // 10]:
        if not (subset / p.name).exists():
            (subset / p.name).symlink_to(p)
    few, many = peak_memory(small["ckpt"], subset), peak_memory(small["ckpt"], memory_images[0].parent)
    print(f"\n== peak RSS of synthdet predict --csv ({len(memory_images) // 10} vs {len(memory_images)} images)")
    print(f"  main process: {few[0]:.0f} MB vs {many[0]:.0f} MB ({100 * (many[0] / few[0] - 1):+.1f}%)")
    print(f"  with workers: {few[1]:.0f} MB vs {many[1]:.0f} MB ({100 * (many[1] / few[1] - 1):+.1f}%)")


if __name__ == "__main__":
    main()
