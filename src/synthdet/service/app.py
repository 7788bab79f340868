"""HTTP service: ``synthdet serve CKPT`` runs this FastAPI app under uvicorn.

- ``POST /v1/predict``: one or several images (multipart field ``files``) -> result objects
- ``GET /v1/model``: the checkpoint's metadata; ``GET /healthz``; ``GET /docs`` (OpenAPI)
- ``GET /``: a page where a person drops or picks images and sees each verdict

Limits: requests larger than ``max_upload_mb`` get 413 before they are read; an upload
that stalls for ``body_timeout`` seconds gets 408 and its connection closed; a file that
is not an image gets 415, a corrupt or truncated one 422, one over the pixel budget 413
(decompression bombs are refused from the header, before any pixel is decoded; oversized
JPEGs are decoded at reduced scale instead, and the result's ``note`` says so). Inference
runs on a bounded pool of ``workers`` threads (default 1: a forward pass on the CPU runs on
every core already), and each request decodes and scores its files one at a time, so memory
is bounded by ``workers`` images of :data:`SERVICE_MAX_PIXELS` whatever the number of
requests or files. The model is loaded once, at start.

Under load the service sheds instead of queueing without end (:class:`Admission`): at most
``max_queue`` requests wait or run; one more gets 503 with ``Retry-After`` at once. A
request that has not finished within ``request_timeout`` seconds gets 503 too, and the
work of a request whose client went away, or that ran out of time, is dropped before its
next file. Images are scored with the model's own view, as ``synthdet predict`` and
:meth:`Detector.predict` do, unless the request asks for tiles or one crop.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse

from synthdet.data.decode import DEFAULT_MAX_PIXELS, load_image
from synthdet.inference.detector import Detector, PredictOptions
from synthdet.inference.heatmap import heatmap_image
from synthdet.version import __version__

DEFAULT_MAX_UPLOAD_MB = 20
#: Pixel budget of one uploaded image: half the command line's, because a server must stay
#: near its idle memory under load (decoding peaks at about 8 bytes per pixel: 80 MB per
#: inference thread, within 1.5x of an idle server's 300 MB). Larger JPEGs are decoded at
#: reduced scale, other formats refused (413).
SERVICE_MAX_PIXELS = DEFAULT_MAX_PIXELS // 2
#: Seconds an upload may go without sending a byte before it gets 408 (its connection is
#: closed). uvicorn's own ``timeout_keep_alive`` closes idle connections between requests.
DEFAULT_BODY_TIMEOUT = 30.0
KEEP_ALIVE_TIMEOUT = 5
#: Requests that may wait or run at once, per inference thread; one more is answered 503.
DEFAULT_QUEUE_PER_WORKER = 8
#: Seconds a request may take, queueing included, before it is answered 503 and its work dropped.
DEFAULT_REQUEST_TIMEOUT = 60.0
#: How often a waiting request checks whether its client is still there.
DISCONNECT_POLL_S = 0.25


class Overloaded(Exception):
    """Raised inside a scoring job to stop it: the client left or the deadline passed."""


class Admission:
    """A bounded queue of requests: admit while fewer than ``limit`` are in, else shed with a wait hint.

    ``Retry-After`` is the time the requests already in would take at the recent mean time a
    request spent in the service (queueing included, so the hint errs long), shared by
    ``workers`` threads (at least 1 s).
    """

    def __init__(self, limit: int, workers: int):
        self.limit, self.workers = limit, workers
        self.active = 0
        self.mean_seconds = 1.0  # exponential mean of a finished request's time in the service
        self.shed = 0

    def try_enter(self) -> bool:
        if self.active >= self.limit:
            self.shed += 1
            return False
        self.active += 1
        return True

    def leave(self, seconds: float | None) -> None:
        self.active -= 1
        if seconds is not None:
            self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def retry_after(self) -> int:
        return max(1, math.ceil(self.active * self.mean_seconds / self.workers))


class BodyLimits:
    """ASGI middleware answering 413 once a request body exceeds ``limit`` bytes, and 408
    when the body stalls for ``timeout`` seconds.

    Checks the declared Content-Length first, and counts streamed bytes too (chunked
    uploads declare none), so an oversized upload is never held in full; a client that
    stops sending mid-upload cannot hold its connection forever.
    """

    def __init__(self, app, limit: int, timeout: float = DEFAULT_BODY_TIMEOUT):
        self.app, self.limit, self.timeout = app, limit, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"upload exceeds the {self.limit / 2**20:g} MB limit"
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and int(declared) > self.limit:
            return await JSONResponse({"detail": message}, status_code=413)(scope, receive, send)
        received = 0

        async def guarded_receive():
            nonlocal received
            try:
                event = await asyncio.wait_for(receive(), self.timeout)
            except asyncio.TimeoutError:
                # An HTTPException passes FastAPI's body parsing unchanged and becomes the response.
                raise HTTPException(status_code=408, detail=f"upload stalled for {self.timeout:g} s",
                                    headers={"Connection": "close"}) from None
            received += len(event.get("body", b""))
            if received > self.limit:
                raise HTTPException(status_code=413, detail=message)
            return event

        await self.app(scope, guarded_receive, send)


def create_app(checkpoint: str | Path | None = None, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, workers: int = 1,
               device: str = "auto", body_timeout: float = DEFAULT_BODY_TIMEOUT, max_queue: int | None = None,
               request_timeout: float = DEFAULT_REQUEST_TIMEOUT) -> FastAPI:
    detector = Detector.load(checkpoint, device)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synthdet")
    admission = Admission(max_queue or DEFAULT_QUEUE_PER_WORKER * workers, workers)
    # At most this many requests hold their upload bytes in memory; the others wait with
    # their uploads still spooled by the multipart parser.
    in_memory = asyncio.Semaphore(4 * workers)
    app = FastAPI(title="synthdet", version=__version__,
                  description="Tell real photographs from synthetic images. See GET / for a web page.")

    @app.get("/v1/model")
    def model():
        return detector.meta.model_dump(mode="json")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return resources.files("synthdet.service").joinpath("index.html").read_text()

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "requests_in": admission.active, "queue_limit": admission.limit,
                "shed": admission.shed}

    @app.post("/v1/predict")
    async def predict(
        request: Request,
        files: list[UploadFile] = File(..., description="one or several images"),
        heatmap: bool = Query(False, description="add a PNG heatmap of tile probabilities (base64)"),
        tiles: bool | None = Query(None, description="true: tiles over the image; false: one center crop; "
                                                     "omitted: the model's own view, as synthdet predict"),
        tta: bool = Query(False, description="also score mirrored views"),
        provenance: bool = Query(True, description="also read what each file declares (C2PA, IPTC, generator "
                                                   "settings, EXIF); the combined verdict says its basis"),
    ):
        if not admission.try_enter():
            raise HTTPException(status_code=503, detail=f"busy: {admission.active} requests in, try again later",
                                headers={"Retry-After": str(admission.retry_after())})
        started = time.monotonic()
        stop = threading.Event()  # set when the client leaves or the deadline passes: the job ends early
        finished = None
        try:
            options = PredictOptions(tiles=tiles, tta=tta, keep_tiles=heatmap, workers=0,
                                     max_pixels=SERVICE_MAX_PIXELS, provenance=provenance)
            async with in_memory:
                uploads = [(f.filename or f"file {i}", await f.read()) for i, f in enumerate(files)]
                job = asyncio.get_running_loop().run_in_executor(pool, _score, detector, uploads, options, heatmap,
                                                                 stop)
                results = await _watch(job, request, stop, started + request_timeout)
            finished = time.monotonic() - started
        finally:
            admission.leave(finished)
        if results is None:
            raise HTTPException(status_code=503, detail=f"not finished within {request_timeout:g} s; dropped",
                                headers={"Retry-After": str(admission.retry_after())})
        if all("error" in r and r["error"] for r in results):
            status, detail = results[0]["status"], "; ".join(f"{r['input']}: {r['error']}" for r in results)
            raise HTTPException(status_code=status, detail=detail)
        for r in results:
            r.pop("status", None)
        return {"results": results}

    app.add_middleware(BodyLimits, limit=int(max_upload_mb * 2**20), timeout=body_timeout)
    app.state.detector = detector
    return app


async def _watch(job: asyncio.Future, request: Request, stop: threading.Event, deadline: float) -> list | None:
    """The job's results, or None once the client has gone or the deadline has passed (the job is told to stop)."""
    while True:
        done, _ = await asyncio.wait({job}, timeout=DISCONNECT_POLL_S)
        if done:
            try:
                return job.result()
            except Overloaded:
                return None
        if time.monotonic() > deadline or await request.is_disconnected():
            stop.set()
            job.cancel()  # still queued: it never starts; running: it stops before its next file
            return None


def _score(detector: Detector, uploads: list[tuple[str, bytes]], options: PredictOptions, heatmap: bool,
           stop: threading.Event) -> list[dict]:
    """Score the uploads of one request (runs on the worker pool) one at a time, in upload order.

    Each file is decoded, scored and let go before the next is read, so a request of many
    large images holds one decoded image at a time. ``stop`` ends the job before the next file.
    """
    results = []
    for name, data in uploads:
        if stop.is_set():
            raise Overloaded
        (prediction,) = detector.score_items([io.BytesIO(data)], options)
        prediction.input = name
        if not prediction.ok:
            results.append({"input": name, "error": prediction.error, "status": _status_for(prediction.error)})
            continue
        result = prediction.to_dict()
        if heatmap:
            buffer = io.BytesIO()
            pixels = load_image(io.BytesIO(data), options.max_pixels).pixels
            heatmap_image(pixels, prediction).save(buffer, format="PNG")
            result["heatmap_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")
        else:
            result.pop("tiles")
        results.append(result)
    return results


def _status_for(reason: str) -> int:
    """413 for what the budget refuses, 415 for what is no image at all, 422 for damaged images."""
    if reason.startswith("not an image"):
        return 415
    if reason.startswith("too large"):
        return 413
    return 422
