"""Runs inside the sahu65 peer's own virtual environment (never imports synthdet).

Reads image paths (one per line) on stdin and prints one JSON line per image with what
``sahu65.detect(path)`` returns, one image at a time, as that package runs it.
"""

import json
import sys
import time

import sahu65

sahu65.warm()
for line in sys.stdin:
    path = line.rstrip("\n")
    started = time.perf_counter()
    try:
        result = sahu65.detect(path)
        row = {"path": path, "ai_probability": result.ai_probability, "verdict": result.verdict,
               "detector_probability": result.detector_probability}
    except Exception as exc:  # the peer's own errors are data here, not a crash of the comparison
        row = {"path": path, "error": f"{type(exc).__name__}: {exc}"}
    row["seconds"] = time.perf_counter() - started
    print(json.dumps(row), flush=True)
