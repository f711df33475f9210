# Three commands do all set-up on a fresh machine:
#   make run    # creates .venv if needed, then the main job: the compression experiment on MRPC with the
#               # packaged MiniLM, sized for a 2-core CPU (presets/quick.yaml), ending in an exported champion
#   make test   # creates .venv if needed, then runs the test suite
#   make smoke  # creates .venv if needed, then the README's commands on tiny slices (CI runs it first)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export DVC_NO_ANALYTICS ?= 1
export DO_NOT_TRACK ?= 1

.PHONY: setup run experiment smoke lint test test-fast
setup: $(VENV)/.installed

# torch first, pinned: its CPU wheel is on disk here; an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --no-compile --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --no-compile --disable-pip-version-check -e '.[pipeline,test]'
	touch $@

run: setup  # fine-tune, prune, evaluate, report, export the champion and register it (~10 min here, set-up included)
	$(BIN)/python -m flows.compress --task mrpc --params presets/quick.yaml

experiment: setup  # the full experiment on MRPC: params.yaml's variant table, 3 seeds, the lr sweep
	$(BIN)/python -m flows.compress --task mrpc

smoke: setup  # the README's commands on tiny SST-2 slices, as a newcomer runs them, each result checked (~6 min)
	bash scripts/smoke.sh

lint: setup  # the house format (ruff format) and lint (ruff check), as CI runs them
	$(BIN)/ruff format --check --quiet .
	$(BIN)/ruff check --quiet .

test-fast: lint  # unit tests and single steps on tiny slices: no flow, DVC, server or browser (~3 min here)
	$(BIN)/python -m pytest -q -m "not slow"

test: test-fast  # then the slow tier: every test runs once
	$(BIN)/python -m pytest -q -m slow
