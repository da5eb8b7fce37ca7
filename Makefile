# One entry point for people and CI. `make up` runs the platform; `make test` checks everything.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup run-setup system-deps test-deps kafka-jars up test lint typecheck unit integration bench clean

# Everything the tests need; `make up` needs less (run-setup): no browser.
setup: run-setup test-deps

run-setup: system-deps $(STAMP) kafka-jars

# Java runs the local broker and Maven fetches it. Installed from Debian when missing (apt-get:
# as root; `python3 -m venv` also needs Debian's python3-venv).
system-deps:
	@if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then \
		echo "installing Java and Maven (apt-get)"; \
		apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven; \
	fi

# Headless Chromium renders the dashboard in its test (tests/integration/test_dashboard.py).
test-deps:
	@if ! command -v chromium >/dev/null; then \
		echo "installing Chromium (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Fetch the Apache Kafka broker jars from Maven Central once (cached outside the repo).
kafka-jars: $(STAMP)
	$(BIN)/python -c "import os; from bus.localkafka import fetch_jars; print(fetch_jars(os.environ))"

up: run-setup
	$(BIN)/bus up $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

integration: setup
	$(BIN)/pytest tests/integration -q

# Two test processes (pytest-xdist), each with its own broker unless KAFKA_BOOTSTRAP_SERVERS is set:
# most integration tests wait on Kafka rather than the CPU, so the suite takes about 60% as long.
test: setup lint typecheck
	$(BIN)/pytest -q -n 2 --dist worksteal --durations=15

# The bench also measures faust-streaming (the `bench` extra), which the platform does not use.
$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

bench: setup $(VENV)/.bench-installed
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
