# make demo   set up .venv/ and run the embedded CPU demo
# make test   set up .venv/ and run lint, type check and the test suite
#
# TORCH_SPEC picks the torch build. The default is the CPU wheel (this project's CI machines have
# it on local disk); on a GPU machine use e.g. `make setup TORCH_SPEC=torch`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
EXAMPLE := examples/opd-example-task

.PHONY: setup demo test lint typecheck clean

$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,math,bench,launchers,eval,gguf]" -e $(EXAMPLE)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) -m opd_core

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: setup
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest

clean:
	rm -rf $(VENV) outputs multirun .mypy_cache .ruff_cache .pytest_cache
