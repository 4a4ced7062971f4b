# One entry point for what a developer and CI do. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: help venv demo test lint unit integration bench faults faults-input clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

venv: $(VENV)/.installed  ## create .venv and install shudi with its dev extras

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

demo: venv  ## local Kafka, two workers and the simulator with scripted bursts, watched live
	$(BIN)/shudi demo

lint: venv  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv  ## tests that need no broker
	$(BIN)/pytest -m "not integration"

integration: venv  ## tests on a real Kafka broker (started by the tests unless TEST_KAFKA_BOOTSTRAP is set)
	$(BIN)/pytest -m integration

test: lint  ## everything CI runs: lint, then the whole test suite on a real broker
	$(BIN)/pytest

bench: venv  ## throughput benchmark on the local broker (not a test; prints figures)
	$(BIN)/python -m bench.throughput

faults: venv  ## every fault row once, as the README's table was made (README, Faults; root; ~25 min; not a test)
	$(BIN)/python -m bench.faults --fault none --fault broker-kill --fault broker-pause --fault worker-kill \
		--fault rolling-restart --fault network-cut --fault rebalance-storm --fault worker-kill-rebalance \
		--fault poison-pills --fault geodb-swap --fault disk-full --events 30000 --rate 1000 \
		--kafka-version 4.1.1

faults-input: venv  ## the input rows at full size: 100,000 hostile records, 200,000 events (README, Faults; root; ~15 min)
	$(BIN)/python -m bench.faults --fault poison-pills --events 100000
	$(BIN)/python -m bench.faults --fault geodb-swap --events 200000
	$(BIN)/python -m bench.faults --fault disk-full --events 30000

clean:  ## remove the venv and local state (the Kafka jar cache stays in ~/.cache/shudi)
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
