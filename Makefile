# recflow — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
AIRFLOW_PORT ?= 8080
# pytest workers for make test (one module's tests stay on one worker); 0 runs in-process
TEST_WORKERS ?= 2
# Folder holding the CPU build of torch (the lock pins torch==2.13.0+cpu); pip's own
# find-links setting when there is one. Elsewhere set UV_EXTRA_INDEX_URL to a CPU torch index.
WHEELS ?= $(shell pip config get global.find-links 2>/dev/null || echo /opt/wheels)
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1
# imports of the large stack (Airflow, GX, DVC) are several times faster from bytecode
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup lock run airflow up down drift-demo test test-fast lint format bench bench-scale bench-recbole recbole-env clean wrk prometheus serve

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)

$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python --find-links $(WHEELS) -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

setup: $(VENV)/.installed wrk prometheus ## Create the virtual environment from the lock file (idempotent)

wrk: ## Install Debian's wrk, the serving benchmark's load generator (as root, with apt-get)
	@command -v wrk >/dev/null && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q wrk >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; } || \
	  echo "wrk could not be installed: the serving benchmark and its tests will skip"; \
	else echo "wrk not installed (needs apt-get as root): the serving benchmark will skip"; fi

prometheus: ## Install Debian's prometheus, which a rollout's analysis queries (as root, with apt-get)
	@command -v prometheus >/dev/null && exit 0; \
	if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; } || \
	  echo "prometheus could not be installed: rollouts read the servers' /metrics instead"; \
	else echo "prometheus not installed (needs apt-get as root): rollouts read the servers' /metrics"; fi

serve: setup ## Serve models/candidate/optimized (RECFLOW_API_TOKENS, RECFLOW_ADMIN_TOKEN, RECFLOW_PSEUDONYM_KEY)
	$(BIN)/recflow serve --model models/candidate/optimized

lock: | $(BIN)/uv ## Re-resolve requirements.lock from pyproject.toml
	$(BIN)/uv pip compile -q pyproject.toml --extra dev --python-version 3.11 --no-header \
	  --python-platform x86_64-manylinux_2_28 --find-links $(WHEELS) -o requirements.lock
	{ echo "# Locked environment for recflow (Python 3.11, linux x86_64). Regenerate with: make lock"; \
	  echo "# torch is the CPU build (+cpu) from the local wheel folder; see the Makefile's WHEELS."; \
	  cat requirements.lock; } > requirements.lock.tmp && mv requirements.lock.tmp requirements.lock

run: setup ## Run the chain on the embedded default (Airflow DAG, ending deployed), then dvc repro
	@$(BIN)/python -m pipelines.main_job

airflow: setup ## Open the Airflow UI for this project on 127.0.0.1 (AIRFLOW_PORT, default 8080)
	@$(BIN)/python -m pipelines.main_job.ui --port $(AIRFLOW_PORT)

up: setup ## Start the local stack on 127.0.0.1 (Airflow, the public store, fleets, Prometheus); returns when it answers
	@$(BIN)/python -m pipelines.main_job.stack up --port $(AIRFLOW_PORT)

down: ## Stop exactly the processes make up started (recorded in .airflow/stack/state.json)
	@$(BIN)/python -m pipelines.main_job.stack down

drift-demo: setup ## Day 1 deploys; day 2 drifts (category_shift 0.5): the monitor finds it, a retrain runs
	@$(BIN)/python -m pipelines.main_job.drift_demo $(DRIFT_DEMO_ARGS)

test: setup ## Run the whole test suite (unit, data, model, serving, registry, rollout, dags, integration)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: setup ## Run the tests not marked slow
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow"

lint: setup ## ruff lint and format check, import contracts, mypy on pipelines/ and plugins/, hadolint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/hadolint docker/*Dockerfile

format: setup ## Apply ruff formatting and autofixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup ## Rerun every benchmark; results land in benchmarks/results/
	$(BIN)/python -m benchmarks.run_all

bench-scale: setup ## Growth curve of the stages at 1M, 10M and 100M events (hours on 2 cores)
	$(BIN)/python -m benchmarks.bench_scale

recbole-env: .venv-recbole/.installed ## RecBole's own environment for the RecBole comparison

.venv-recbole/.installed: benchmarks/recbole-requirements.txt | $(BIN)/uv
	$(PYTHON) -m venv .venv-recbole
	$(BIN)/uv pip install -q --python .venv-recbole/bin/python --find-links $(WHEELS) -r $<
	touch $@

bench-recbole: setup recbole-env ## recflow vs RecBole SASRec on MovieLens-100k, like for like (hours on 2 cores)
	$(BIN)/python -m benchmarks.bench_recbole --threads 2 all

clean: ## Remove run outputs (keeps raw batches and the virtual environment)
	rm -rf reports/validation data/prepared data/validated models/candidate/model.pt models/candidate/checkpoints .airflow
