# `make demo` sets everything up and runs the demo; `make test` runs the test suite.
# Both create .venv on first use. torch is installed on its own first, pinned to the
# CPU build, so no dependency can pull the multi-GB CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/synthdet demo

test: setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not slow"

clean:
	rm -rf $(VENV) synthdet-demo runs .pytest_cache
