# Orchestra — the two commands: `make run` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt

.PHONY: run test install install-dev lint typecheck pytest bench bench-engine bench-nodes bench-volume browser agent-clis clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(PIP) -e .

install-dev: $(BIN)/python
	$(PIP) -e '.[dev,bench]'

## Install and run Orchestra on its embedded defaults (SQLite in ~/.orchestra, demo agents),
## without tokens on loopback: http://127.0.0.1:3030
run: install
	$(BIN)/orchestra serve --no-auth

## Install everything and run the whole suite: lint, types, tests on SQLite and PostgreSQL.
test: install-dev browser agent-clis lint typecheck pytest

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q -p no:cacheprovider

## The real agent CLIs the agent tests run (pinned in agents-cli/package-lock.json); reinstalled
## only when node_modules is missing or older than the lockfile.
agent-clis: agents-cli/node_modules/.package-lock.json

agents-cli/node_modules/.package-lock.json: agents-cli/package-lock.json
	npm ci --no-audit --no-fund --prefix agents-cli
	@touch $@

browser:
	@command -v chromium >/dev/null 2>&1 || scripts/install-chromium

## Benchmarks (README "Benchmarks"): Orchestra beside LangGraph on SQLite and PostgreSQL, then
## 1, 2 and 4 worker processes on one PostgreSQL database and a worker killed mid-run.
BENCH_PG ?= postgresql://postgres@127.0.0.1:5432/test

bench: bench-engine bench-nodes

bench-engine: install-dev
	$(BIN)/python benchmarks/engine.py --pg $(BENCH_PG)

bench-nodes: install-dev
	$(BIN)/python benchmarks/nodes.py --pg $(BENCH_PG)

## 100,000 workflows waiting at checkpoints: pages and API p50/p99, server RSS
## (SQLite; PG=postgresql://postgres@127.0.0.1:5432/test for PostgreSQL).
bench-volume: install-dev
	$(BIN)/python benchmarks/volume.py $(if $(PG),--pg $(PG))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
