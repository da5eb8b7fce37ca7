# One entry point for people and CI. `make up` runs the platform; `make test` checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup kafka-jars up test lint typecheck unit integration bench clean

setup: $(STAMP) kafka-jars

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fetch the Apache Kafka broker jars from Maven Central once (cached outside the repo).
kafka-jars: $(STAMP)
	$(BIN)/python -c "import os; from bus.localkafka import fetch_jars; print(fetch_jars(os.environ))"

up: setup
	$(BIN)/bus up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: setup
	$(BIN)/pytest tests/integration -q

test: setup lint typecheck
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
