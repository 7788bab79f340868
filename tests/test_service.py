"""The HTTP service, over a real uvicorn server on 127.0.0.1."""

import base64
import io
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    log = log_path.open("w")  # a file, not a pipe: a pipe nobody reads fills and blocks the server
    # a queue longer than the tests' 25 concurrent clients: these tests mean to be served, not shed
    proc = subprocess.Popen([sys.executable, "-m", "synthdet", "serve", "-m", str(checkpoint), "--port", str(port),
                             "--max-queue", "64"],
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text())
    else:
        proc.kill()
        raise RuntimeError("server did not start")
    yield url, proc
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


@pytest.fixture(scope="module")
def toy_jpeg(toy_sources) -> Path:
    return sorted(Path(toy_sources[0]["path"]).glob("*.jpg"))[0]


def post(url, files, **params):
    return httpx.post(f"{url}/v1/predict", files=files, params=params, timeout=120)


def test_upload_round_trip_with_heatmap(server, toy_jpeg):
    url, _ = server
    response = post(url, [("files", (toy_jpeg.name, toy_jpeg.read_bytes(), "image/jpeg"))], heatmap="true")
    assert response.status_code == 200
    (result,) = response.json()["results"]
    assert result["input"] == toy_jpeg.name and result["label"] in ("real", "synthetic")
    assert 0 <= result["prob_synthetic"] <= 1 and isinstance(result["uncertain"], bool)
    heatmap = Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"])))
    assert heatmap.format == "PNG" and heatmap.size[0] > 50


def test_several_files_keep_their_order_and_bad_ones_report_why(server, toy_jpeg, awkward_folder):
    url, _ = server
    files = [("files", ("a.jpg", toy_jpeg.read_bytes(), "image/jpeg")),
             ("files", ("notes.jpg", b"just text", "image/jpeg")),
             ("files", ("tiny.png", (awkward_folder / "tiny_32.png").read_bytes(), "image/png"))]
    results = post(url, files).json()["results"]
    assert [r["input"] for r in results] == ["a.jpg", "notes.jpg", "tiny.png"]
    assert results[1]["error"] == "not an image Pillow can identify" and results[2]["label"]


def test_oversize_upload_is_413(server):
    url, _ = server
    blob = os.urandom(21 * 2**20)
    response = post(url, [("files", ("big.jpg", blob, "image/jpeg"))])
    assert response.status_code == 413 and "20 MB limit" in response.json()["detail"]


def test_text_file_is_415_and_truncated_jpeg_is_422(server, awkward_folder):
    url, _ = server
    text = post(url, [("files", ("notes.txt", b"hello, not an image", "text/plain"))])
    assert text.status_code == 415 and "not an image" in text.json()["detail"]
    truncated = post(url, [("files", ("cut.jpg", (awkward_folder / "truncated.jpg").read_bytes(), "image/jpeg"))])
    assert truncated.status_code == 422 and "truncated" in truncated.json()["detail"]


def test_decompression_bomb_is_refused_from_its_header(server):
    url, _ = server
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, format="PNG")  # 144 MP in a ~20 kB file
    response = post(url, [("files", ("bomb.png", buffer.getvalue(), "image/png"))])
    assert response.status_code == 413 and "pixel limit" in response.json()["detail"]


def test_model_health_and_openapi(server):
    url, _ = server
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok", "requests_in": 0, "queue_limit": 64, "shed": 0}
    model = httpx.get(f"{url}/v1/model").json()
    assert model["model"]["name"] == "resnet18" and model["crop"] == "64x64"
    assert "/v1/predict" in httpx.get(f"{url}/openapi.json").json()["paths"]
    assert httpx.get(f"{url}/docs").status_code == 200


def test_hundred_concurrent_requests_complete_with_bounded_memory(server, toy_jpeg):
    url, proc = server
    data = toy_jpeg.read_bytes()
    server_process = psutil.Process(proc.pid)
    post(url, [("files", ("warmup.jpg", data, "image/jpeg"))])
    before = server_process.memory_info().rss

    def one(i):
        return post(url, [("files", (f"{i}.jpg", data, "image/jpeg"))]).status_code

    with ThreadPoolExecutor(max_workers=25) as pool:  # a bounded client loop, loopback only
        statuses = list(pool.map(one, range(100)))
    after = server_process.memory_info().rss
    assert statuses == [200] * 100
    assert after - before < 300 * 2**20, f"server grew by {(after - before) / 2**20:.0f} MB"


def test_provenance_sits_beside_the_pixel_verdict(server, toy_jpeg, sign_c2pa):
    url, _ = server
    signed = sign_c2pa(toy_jpeg.read_bytes(), "trainedAlgorithmicMedia")
    result = post(url, {"files": ("signed.jpg", signed, "image/jpeg")}).json()["results"][0]
    assert result["verdict"] == "synthetic" and result["basis"] in ("declared", "both")
    assert result["label"] in ("real", "synthetic") and 0 <= result["prob_synthetic"] <= 1  # the pixels, unchanged
    (c2pa,) = [e for e in result["provenance"]["evidence"] if e["kind"] == "c2pa"]
    assert c2pa["detail"]["signer"] == "Throwaway Test Org" and c2pa["detail"]["signer_trusted"] is False
    plain = post(url, {"files": ("plain.jpg", toy_jpeg.read_bytes(), "image/jpeg")}).json()["results"][0]
    assert plain["basis"] == "pixels" and plain["verdict"] == plain["label"]
    skipped = post(url, {"files": ("signed.jpg", signed, "image/jpeg")}, provenance="false").json()["results"][0]
    assert skipped["provenance"] is None and skipped["basis"] == "pixels"


def test_web_page_shows_a_verdict_for_an_uploaded_image(server, toy_jpeg, browser, sign_c2pa, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda d: "Model resnet18" in d.find_element(By.ID, "model").text)
    browser.find_element(By.ID, "file-input").send_keys(str(toy_jpeg))
    verdict = WebDriverWait(browser, 60).until(ec.visibility_of_element_located((By.CSS_SELECTOR, ".verdict")))
    assert verdict.text in ("real", "synthetic")
    assert "P(synthetic)" in browser.find_element(By.CSS_SELECTOR, ".result").text
    heatmap = browser.find_element(By.CSS_SELECTOR, ".result img")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", heatmap)

    signed = tmp_path / "signed.jpg"
    signed.write_bytes(sign_c2pa(toy_jpeg.read_bytes(), "trainedAlgorithmicMedia"))
    file_input = browser.find_element(By.ID, "file-input")
    browser.execute_script("arguments[0].value = '';", file_input)  # a file input keeps (and re-sends) earlier picks
    file_input.send_keys(str(signed))

    def signed_card(driver):
        return next((card for card in driver.find_elements(By.CSS_SELECTOR, ".result")
                     if "signed.jpg" in card.find_element(By.CSS_SELECTOR, ".name").text), None)

    card = WebDriverWait(browser, 60).until(signed_card)
    assert card.find_element(By.CSS_SELECTOR, ".verdict").text.startswith("synthetic, declared by the file")
    assert "c2pa: trainedAlgorithmicMedia by synthdet test generator" in card.text and "pixels say" in card.text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "service_page.png"))
    assert (ARTIFACTS / "service_page.png").stat().st_size > 10_000


class ServerThread:
    """A uvicorn server for an app object, in a thread of this process (so a test can patch its scoring)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture()
def held_scoring(monkeypatch):
    """Scoring that waits until the test releases it (or the request is told to stop); records stops."""
    import threading

    from synthdet.service import app as service

    state = {"release": threading.Event(), "started": threading.Event(), "stopped": []}

    def slow_score(detector, uploads, options, heatmap, stop):
        state["started"].set()
        while not state["release"].is_set():
            if stop.wait(0.05):
                state["stopped"].append(uploads[0][0])
                raise service.Overloaded
        return [{"input": name, "prob_synthetic": 0.5} for name, _ in uploads]

    monkeypatch.setattr(service, "_score", slow_score)
    return state


def test_a_full_queue_sheds_at_once_with_retry_after(checkpoint, held_scoring, toy_jpeg):
    from synthdet.service.app import create_app

    files = [("files", ("a.jpg", toy_jpeg.read_bytes(), "image/jpeg"))]
    with ServerThread(create_app(checkpoint, device="cpu", max_queue=2)) as server, \
            ThreadPoolExecutor(max_workers=2) as clients:
        held = [clients.submit(post, server.url, files) for _ in range(2)]
        deadline = time.monotonic() + 20
        while httpx.get(f"{server.url}/healthz").json()["requests_in"] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        shed = post(server.url, files)
        assert time.monotonic() - started < 2  # answered at once, not queued
        assert shed.status_code == 503 and int(shed.headers["Retry-After"]) >= 1
        assert "busy" in shed.json()["detail"]
        held_scoring["release"].set()
        assert [f.result().status_code for f in held] == [200, 200]
        health = httpx.get(f"{server.url}/healthz").json()
        assert health["requests_in"] == 0 and health["shed"] == 1


def test_a_request_past_its_deadline_is_dropped_with_503(checkpoint, held_scoring, toy_jpeg):
    from synthdet.service.app import create_app

    with ServerThread(create_app(checkpoint, device="cpu", request_timeout=1.0)) as server:
        started = time.monotonic()
        response = post(server.url, [("files", ("late.jpg", toy_jpeg.read_bytes(), "image/jpeg"))])
        assert response.status_code == 503 and "within 1 s" in response.json()["detail"]
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while not held_scoring["stopped"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held_scoring["stopped"] == ["late.jpg"]  # the scoring job was told to stop, and did


def test_work_of_a_client_that_went_away_is_dropped(checkpoint, held_scoring, toy_jpeg):
    from synthdet.service.app import create_app

    with ServerThread(create_app(checkpoint, device="cpu", request_timeout=120)) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.url}/v1/predict", timeout=httpx.Timeout(30, read=1.0),
                       files=[("files", ("gone.jpg", toy_jpeg.read_bytes(), "image/jpeg"))])
        deadline = time.monotonic() + 10  # the client closed its connection on the timeout
        while not held_scoring["stopped"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held_scoring["stopped"] == ["gone.jpg"]
        assert httpx.get(f"{server.url}/healthz").json()["requests_in"] == 0


def test_service_and_predict_give_one_probability_for_one_file(checkpoint, toy_jpeg, tmp_path):
    """One view policy: the service scores with the model's view, as Detector.predict and the CLI do."""
    from synthdet.checkpoint import read_metadata, read_tensors, save_checkpoint
    from synthdet.config import ViewConfig
    from synthdet.inference.detector import Detector
    from synthdet.service.app import create_app

    one_crop = tmp_path / "one-crop.safetensors"  # a model whose own view is one center crop, not tiles
    save_checkpoint(one_crop, read_tensors(checkpoint),
                    read_metadata(checkpoint).model_copy(update={"view": ViewConfig(mode="crop")}))
    (expected,) = Detector.load(one_crop, "cpu").predict([toy_jpeg])
    assert expected.n_tiles == 1
    with ServerThread(create_app(one_crop, device="cpu")) as server:
        (result,) = post(server.url, [("files", (toy_jpeg.name, toy_jpeg.read_bytes(), "image/jpeg"))]).json()["results"]
    assert result["n_tiles"] == expected.n_tiles
    assert result["prob_synthetic"] == pytest.approx(expected.prob_synthetic, abs=1e-6)
