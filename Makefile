# The workbench's tasks. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
VENV := .venv
UV := .uv/bin/uv
# Setup downloads packages only: never a Python build, never an engine extension.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help demo test test-deep lab lint format bench binder doctor clean

help: ## list the tasks
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra dev --python "$$(command -v $(PYTHON))"
	@touch $@

env: $(VENV)/.synced ## create the environment from the lock (no resolve)

demo: $(VENV)/.synced ## run every notebook on the defaults into build/executed (index.html)
	$(BIN)/workbench doctor
	$(BIN)/workbench run notebooks/[0-9]*.ipynb --out build/executed --index build/executed/index.html
	@echo "open build/executed/index.html"

test: $(VENV)/.synced ## run the tests, notebooks included, on duckdb, polars and datafusion
	rm -rf build/test-executed
	$(BIN)/pytest -n 2 --dist loadgroup -m "not browser"
	$(BIN)/pytest -m browser

test-deep: $(VENV)/.synced ## the tests with the deep hypothesis profile (more examples)
	WORKBENCH_HYPOTHESIS_PROFILE=deep $(BIN)/pytest -n 2 --dist loadgroup -m "not browser"

lab: $(VENV)/.synced ## open JupyterLab on 127.0.0.1 at the start notebook
	$(BIN)/workbench lab

lint: $(VENV)/.synced ## ruff on code and notebooks, and notebooks committed without outputs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q tests/test_notebooks_static.py

format: $(VENV)/.synced ## format code and notebooks with ruff
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.synced ## run the benchmarks (they print ratios; minutes at scale 1)
	$(BIN)/workbench bench

binder: $(UV) ## export binder/requirements.txt from the lock
	$(UV) export --frozen --no-dev --no-hashes --no-emit-project --no-header -o binder/requirements.txt >/dev/null

doctor: $(VENV)/.synced ## versions in use and which engines work
	$(BIN)/workbench doctor

clean: ## remove the environment, build outputs and lakes
	rm -rf $(VENV) .uv build notebooks/lakes .pytest_cache .hypothesis
