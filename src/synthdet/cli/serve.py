"""``synthdet serve``: a model behind HTTP, with a web page."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from synthdet.cli.common import DEVICE, MODEL, out


def serve(
    model: Optional[Path] = MODEL,
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    max_upload_mb: float = typer.Option(20.0, help="larger requests get 413"),
    workers: int = typer.Option(1, min=1, help="inference threads (about 80 MB each under load); requests queue"),
    body_timeout: float = typer.Option(30.0, help="seconds an upload may stall before it gets 408"),
    max_queue: Optional[int] = typer.Option(
        None, min=1, help="requests waiting or running at once; one more gets 503 with Retry-After (default: "
                          "8 per worker)"),
    request_timeout: float = typer.Option(60.0, min=0.1, help="seconds a request may take, queueing included, "
                                                              "before 503; its work is dropped"),
    device: str = DEVICE,
):
    """HTTP service: POST /v1/predict, GET /v1/model, /healthz, /docs, and a web page at /.

    Images are scored with the model's own view, as predict does. Under a load it cannot
    serve it answers 503 with Retry-After at once rather than queueing for minutes, and
    drops the work of clients that went away.
    """
    import uvicorn

    from synthdet.service.app import KEEP_ALIVE_TIMEOUT, create_app

    app = create_app(model, max_upload_mb=max_upload_mb, workers=workers, device=device, body_timeout=body_timeout,
                     max_queue=max_queue, request_timeout=request_timeout)
    out.print(f"synthdet serving {model or 'the default detector'} on http://{host}:{port}/")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=KEEP_ALIVE_TIMEOUT)
