"""Batch scoring throughput: `synthdet score` on the local pipeline and on Ray Data with 1 and 2 actors.

    python benchmarks/ray_scoring.py                  # 400 toy images; a few minutes on 2 cores
    python benchmarks/ray_scoring.py --images 2000 --repeats 3

Trains a small checkpoint on toy data first (the demo's settings for a few steps: speed
does not depend on how well it is trained), writes --images toy JPEGs of 128x96 (6 tiles
of the 64 px crop each), then scores them into fresh Parquet folders and prints images/s,
the median of --repeats runs after one warm-up, for:
  local     the streaming pipeline (DataLoader workers, one process, torch on all cores)
  ray x1    Ray Data, one actor of 1 CPU holding the model
  ray x2    Ray Data, two such actors
and the ratios. Ray runs on this machine (all cores, a 200 MB object store); its start is
timed on its own, while every Ray run includes its actors' start and model load, as a job does.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from importlib import resources
from pathlib import Path

import ray
import torch
import yaml

from synthdet import pipeline
from synthdet.config import config_from_dict, resolve_paths
from synthdet.data.toy import write_toy_dataset
from synthdet.inference.batch import list_inputs, read_results, score_local, score_ray
from synthdet.inference.detector import PredictOptions


def train_checkpoint(work: Path) -> Path:
    """The demo configuration trained for a few steps on a few toy images."""
    sources = write_toy_dataset(work / "train", images_per_source=40, sizes=((128, 96),), seed=1)
    raw = yaml.safe_load(resources.files("synthdet.resources").joinpath("demo.yaml").read_text())
    raw["data"]["sources"] = sources
    raw["output_dir"] = str(work / "runs")
    raw["train"].update(epochs=1, max_steps_per_epoch=3)
    result = pipeline.train(resolve_paths(config_from_dict(raw), work), progress=False, test=False, report=False)
    return result.best_checkpoint


def median_rate(run, n_images: int, repeats: int, work: Path) -> float:
    """Median images/s of ``run(out)`` over ``repeats`` runs after one warm-up, each into a new folder."""
    times = []
    for i in range(repeats + 1):
        out = work / f"out-{time.monotonic_ns()}"
        started = time.perf_counter()
        run(str(out))
        if i:
            times.append(time.perf_counter() - started)
        assert read_results(str(out)).num_rows == n_images
        shutil.rmtree(out)
    return n_images / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="synthdet-ray-bench-"))
    try:
        checkpoint = str(train_checkpoint(work))
        write_toy_dataset(work / "images", images_per_source=args.images // 4, sizes=((128, 96),), seed=2)
        inputs = list_inputs([str(work / "images")])
        options = PredictOptions(batch_size=args.batch_size)
        n = len(inputs)
        print(f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, "
              f"ray {ray.__version__}; {n} toy JPEGs 128x96 (6 tiles each), batch {args.batch_size}, "
              f"load average {os.getloadavg()[0]:.1f}")

        local = median_rate(lambda out: score_local(checkpoint, inputs, out, options), n, args.repeats, work)
        started = time.perf_counter()
        ray.init(num_cpus=cores, object_store_memory=200_000_000, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_start = time.perf_counter() - started
        rates = {k: median_rate(lambda out: score_ray(checkpoint, inputs, out, options, actors=k), n, args.repeats,
                                work) for k in (1, 2)}
        ray.shutdown()

        print(f"{'engine':<10}{'images/s':>10}")
        print(f"{'local':<10}{local:>10.1f}")
        for k, value in rates.items():
            print(f"{f'ray x{k}':<10}{value:>10.1f}")
        print(f"ray x2 / local {rates[2] / local:.2f} | ray x2 / ray x1 {rates[2] / rates[1]:.2f} | "
              f"ray x1 / local {rates[1] / local:.2f} | Ray start {ray_start:.1f} s | "
              f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
