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
    proc = subprocess.Popen([sys.executable, "-m", "synthdet", "serve", "-m", str(checkpoint), "--port", str(port)],
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
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
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
