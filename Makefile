# duo: `make demo` runs the main job on the shipped agents, `make test` the test suite.
# Each target installs what it needs first (idempotent), so each works alone on a fresh machine.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.duo-installed
# CPU build of torch: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: help install test test-fast test-avx2 demo bench lint clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install duo with its dev tools

test: install  ## run the whole test suite (slow tests included)
	$(BIN)/python -m pytest -q

test-fast: install  ## skip tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

test-avx2: install  ## the whole suite as on an AVX2 CPU without bf16 (~9 min here)
	PYTHONPATH=$(CURDIR)/tests/avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \
	  $(BIN)/python -m pytest -q -p no:cacheprovider

demo: install  ## the MiniGrid suite (3 tasks x 4 methods x 6 alphas) on the shipped agents, with report.md
	$(BIN)/duo sweep benchmark=minigrid env.task=DoorKey,LavaGap,DistShift \
	  algorithm=random,logit,always_novice,always_expert \
	  evaluation.num_episodes=64 evaluation.num_envs=32 env.num_envs=32 progress=false \
	  hydra/launcher=joblib hydra.launcher.n_jobs=2

bench: install  ## speed benchmarks, one `name: value` line per figure
	$(BIN)/python bench/run.py

lint: install  ## ruff
	$(BIN)/ruff check duo_cli tests bench tools

clean:  ## remove the venv and run outputs
	rm -rf $(VENV) runs multirun outputs
