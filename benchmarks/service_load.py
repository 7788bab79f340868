"""The HTTP service under load: latency, throughput, shedding and memory at concurrency 1, 10 and 50.

    python benchmarks/service_load.py                 # the default detector, one full-HD JPEG upload
    python benchmarks/service_load.py --requests 300  # more requests per level

Starts ``synthdet serve`` (default settings: one inference thread, a queue of 8) on a free
port, then for each concurrency level runs that many clients, each posting the same
1920x1080 JPEG in a loop until ``--requests`` answers have come back; a client told 503
waits its Retry-After and tries again, as a polite client does. Prints, per level: scored
images/s, p50/p95 latency from first try to answer, the 503s on the way, and the server's
resident memory (idle and peak). Afterwards one request on the idle server shows
that no abandoned work is left running. Then (``--hostile``) the test suite's corpus of
malformed files (decompression bombs, truncated, mislabelled and empty files) is uploaded at
concurrency 50: every answer's status is counted and the server's log is searched for
tracebacks. Prints the CPU flags: compare figures within one run.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from corpus import write_images  # noqa: E402
from throughput import make_images  # noqa: E402

from synthdet.runtime import machine_summary  # noqa: E402

LEVELS = (1, 10, 50)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "synthdet", "serve", "--port", str(port)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300  # the first start may fetch the CLIP backbone
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(log.read_text())
    proc.kill()
    raise RuntimeError("server did not start")


class PeakMemory:
    """Polls a process's resident memory in a thread; ``peak`` in bytes."""

    def __init__(self, pid: int):
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()


def post(url: str, image: bytes, name: str = "hd.jpg") -> tuple[int, float, int]:
    """Upload until answered, as a polite client does: after a 503, wait its Retry-After (at most
    5 s) and try again. The final status, seconds from the first try, and how many 503s came first."""
    started, shed = time.perf_counter(), 0
    while True:
        response = httpx.post(f"{url}/v1/predict", files=[("files", (name, image, "image/jpeg"))], timeout=300)
        if response.status_code != 503:
            return response.status_code, time.perf_counter() - started, shed
        shed += 1
        time.sleep(min(5.0, float(response.headers.get("Retry-After", 1))))


def hostile(url: str, folder: Path, pid: int, rounds: int = 5) -> None:
    """Every malformed file of the corpus, ``rounds`` times, at concurrency 50: statuses and memory."""
    files = [(p.name, p.read_bytes()) for p in sorted(write_images(folder).iterdir()) if p.is_file()]
    with PeakMemory(pid) as memory, ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(lambda f: post(url, f[1], f[0]), files * rounds))
    statuses = {s: sum(1 for a, _, _ in answers if a == s) for s in sorted({a for a, _, _ in answers})}
    print(f"hostile uploads: {len(files)} corpus files x {rounds} at concurrency 50 -> {len(answers)} final "
          f"answers {statuses} after {sum(n for _, _, n in answers)} 503s; peak memory {memory.peak / 2**20:.0f} MB",
          flush=True)


def level(url: str, image: bytes, clients: int, requests: int, pid: int) -> dict:
    counter = iter(range(requests))
    lock = threading.Lock()

    def client(_):
        answers = []
        while True:
            with lock:
                if next(counter, None) is None:
                    return answers
            answers.append(post(url, image))

    with PeakMemory(pid) as memory, ThreadPoolExecutor(max_workers=clients) as pool:
        started = time.perf_counter()
        answers = [a for part in pool.map(client, range(clients)) for a in part]
        seconds = time.perf_counter() - started
    latencies = np.array([t for s, t, _ in answers if s == 200])
    return {"clients": clients, "answers": len(answers), "scored": len(latencies), "seconds": seconds,
            "p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
            "shed": sum(n for _, _, n in answers), "peak_mb": memory.peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="answers per concurrency level")
    parser.add_argument("--hostile", action="store_true", help="also upload the malformed corpus at concurrency 50")
    args = parser.parse_args()
    print(machine_summary(), flush=True)
    work = Path(tempfile.mkdtemp(prefix="synthdet-service-"))
    image = make_images(work, 1, (1920, 1080), ".jpg")[0].read_bytes()
    port = free_port()
    proc = start_server(port, work / "server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        post(url, image)  # warm-up
        idle = psutil.Process(proc.pid).memory_info().rss / 2**20
        print(f"server idle: {idle:.0f} MB; one full-HD JPEG ({len(image) / 1024:.0f} KB) per request", flush=True)
        for clients in LEVELS:
            row = level(url, image, clients, args.requests, proc.pid)
            print(f"concurrency {clients}: {row['scored']} of {row['answers']} requests scored in "
                  f"{row['seconds']:.1f} s ({row['scored'] / row['seconds']:.2f} images/s), latency p50 "
                  f"{row['p50']:.2f} s, p95 {row['p95']:.2f} s (retries after 503 included; {row['shed']} "
                  f"503s with Retry-After on the way); peak memory {row['peak_mb']:.0f} MB", flush=True)
        time.sleep(1)
        status, seconds, _ = post(url, image)
        print(f"one request after the load: {status} in {seconds:.2f} s "
              f"(healthz: {httpx.get(f'{url}/healthz').json()})", flush=True)
        if args.hostile:
            hostile(url, work / "corpus", proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    tracebacks = (work / "server.log").read_text().count("Traceback")
    print(f"server log: {tracebacks} traceback(s)")


if __name__ == "__main__":
    main()
