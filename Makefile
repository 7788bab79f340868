# `make demo` sets everything up and runs the demo; `make test` runs the test suite; `make docs`
# builds the manual into site/. All create .venv on first use, with the exact versions of
# requirements.lock (`make lock` refreshes it). torch is installed on its own first, pinned to
# the CPU build, so no dependency can pull the multi-GB CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs
LOCK := requirements.lock
TORCH := torch==2.13.0
PIP_TOOLS := pip-tools==7.7.0

.PHONY: setup demo test test-fast docs lock clean

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c $(LOCK) $(TORCH)
	$(VENV)/bin/pip install --quiet -c $(LOCK) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(VENV)/bin/synthdet demo

test: setup
	$(VENV)/bin/pytest

test-fast: setup
	$(VENV)/bin/pytest -m "not slow"

$(DOCS_STAMP): $(STAMP)
	$(VENV)/bin/pip install --quiet -c $(LOCK) -e ".[docs]"
	touch $(DOCS_STAMP)

# --strict: a broken link or anchor, a missing included file or API reference fails the build.
# NO_MKDOCS_2_WARNING: Material prints a notice about its successor on every build otherwise.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The lock: every package `.[dev]` and `.[docs]` need, at one tested version each, resolved by
# pip-tools from pyproject.toml's ranges. torch is left out of it (the CPU build is pinned above), and so is
# synthdet itself (the dev extra names it, and pip-compile would pin this folder's path).
lock: setup
	$(VENV)/bin/pip install --quiet $(PIP_TOOLS)
	$(VENV)/bin/pip-compile --quiet --upgrade --extra dev --extra docs --strip-extras --no-emit-index-url \
		--no-emit-find-links --unsafe-package torch --unsafe-package synthdet --output-file $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) synthdet-demo runs .pytest_cache site
