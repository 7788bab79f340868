"""Memory stays bounded whatever the file: decompression-bomb-style inputs through the CLI and the service.

Bomb-style files are small on disk and huge in pixels: headers claiming 65000x65000, a
1x5,000,000 line, and legitimate flat images right at the pixel budget, which are decoded.
"""

import io
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from corpus import jpeg_claiming
from synthdet.checkpoint import CheckpointMeta, ModelSpec
from synthdet.config import FeatureConfig
from synthdet.data.decode import DEFAULT_MAX_PIXELS
from synthdet.network import build_network, save_network
from synthdet.service.app import SERVICE_MAX_PIXELS
from test_service import free_port

pytestmark = pytest.mark.slow
CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_v1" / "cifake_cnn_rgb_fft.safetensors"


def cheap_bombs(folder: Path) -> list[Path]:
    """Files whose headers claim huge images: refused before decoding, or (the line) 5 MP of almost nothing."""
    folder.mkdir(exist_ok=True)
    (folder / "bomb_65000.jpg").write_bytes(jpeg_claiming(65000, 65000, bytes(7000)))
    (folder / "bomb_65000_progressive.jpg").write_bytes(jpeg_claiming(65000, 65000, bytes(50000), True))
    Image.new("1", (12000, 12000)).save(folder / "bomb_1bit.png")
    Image.new("L", (5_000_000, 1), 128).save(folder / "line_1x5000000.png")
    return sorted(folder.iterdir())


def at_budget(folder: Path, max_pixels: int, drafted: bool) -> list[Path]:
    """Small files of legitimate images right at the pixel budget: these are decoded, the worst case."""
    folder.mkdir(exist_ok=True)
    side = int(max_pixels**0.5) - 1
    Image.new("RGB", (side, side), (30, 140, 60)).save(folder / "flat_at_budget.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: one more copy while decoding
    Image.new("CMYK", (side, side), (10, 200, 30, 5)).save(folder / "cmyk_rotated_at_budget.jpg", exif=exif)
    if drafted:  # decoded at half scale, right at the budget
        Image.new("RGB", (2 * side, 2 * side), (200, 40, 40)).save(folder / "jpeg_at_twice_the_side.jpg")
    return sorted(folder.iterdir())


def test_one_cli_prediction_of_any_bomb_style_file_stays_under_500_mb(tmp_path):
    features = FeatureConfig(representations=["fft_mag"])
    net = build_network(features, "resnet18")
    checkpoint = save_network(tmp_path / "resnet18.safetensors", net, CheckpointMeta(
        model=ModelSpec(name="resnet18", in_chans=3), features=features, crop=(64, 64)))
    # each file at the budget in a fresh process (a JPEG drafted down to the budget decodes like these)
    runs = [cheap_bombs(tmp_path / "cheap")] + [[f] for f in at_budget(tmp_path / "full", DEFAULT_MAX_PIXELS, False)]
    peaks = {}
    for run in runs:
        measure = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
                   "stdout=subprocess.DEVNULL); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
        proc = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "synthdet", "predict", "-m",
                               str(checkpoint), *map(str, run), "--json"], capture_output=True, text=True, check=True)
        peaks[run[0].name] = round(int(proc.stdout) / 1024)
    assert max(peaks.values()) < 500, f"peak RSS in MB: {peaks}"


def test_the_service_stays_within_1_5x_its_idle_memory_and_drops_stalled_uploads(tmp_path):
    cheap = [(p.name, p.read_bytes()) for p in cheap_bombs(tmp_path / "cheap")]
    full = [(p.name, p.read_bytes()) for p in at_budget(tmp_path / "full", SERVICE_MAX_PIXELS, True)]
    port = free_port()
    log = (tmp_path / "server.log").open("w")  # a file, not a pipe: a pipe nobody reads fills and blocks the server
    proc = subprocess.Popen([sys.executable, "-m", "synthdet", "serve", "-m", str(CHECKPOINT), "--port", str(port),
                             "--body-timeout", "2", "--max-queue", "32"],  # all 10 concurrent requests are served
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        server = psutil.Process(proc.pid)
        for name in ("warm-up.png", "warm-up.jpg"):  # idle: the model has scored a small image of each format
            buffer = io.BytesIO()
            Image.new("RGB", (100, 80), "gray").save(buffer, format=name.rsplit(".", 1)[1].replace("jpg", "jpeg"))
            httpx.post(f"{url}/v1/predict", files=[("files", (name, buffer.getvalue()))], timeout=300)
        idle = server.memory_info().rss
        peak, sampling = idle, True

        def sample():
            nonlocal peak
            while sampling:
                peak = max(peak, server.memory_info().rss)
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()

        def request(i):  # every bomb, and one of the images at the budget
            files = [*cheap, full[i % len(full)]]
            response = httpx.post(f"{url}/v1/predict", files=[("files", f) for f in files], timeout=600)
            return response.status_code, [bool(r.get("error")) for r in response.json()["results"]]

        with ThreadPoolExecutor(max_workers=10) as pool:
            answers = list(pool.map(request, range(10)))
        sampling = False
        sampler.join()
        assert answers == [(200, [name.startswith("bomb") for name, _ in cheap] + [False])] * 10
        assert peak < 1.5 * idle, f"idle {idle / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB"

        with socket.create_connection(("127.0.0.1", port), timeout=15) as stalled:
            stalled.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                             b"boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n")
            started = time.monotonic()
            answer = stalled.recv(4096)
            while chunk := stalled.recv(4096):  # then the server closes the connection
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and 2 <= time.monotonic() - started < 15
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
    assert "Traceback" not in (tmp_path / "server.log").read_text()  # every refusal is an answer, not a crash
