# The project's commands. `make help` lists them; README.md explains the two that matter most.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_HOME ?= .local/kafka

.PHONY: help setup kafka-up kafka-down kafka-status up down status test test-unit lint fmt typecheck schemas demo bench chaos clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

setup: $(STAMP) ## Create .venv and install the project with its dev tools
	$(BIN)/python -m streams.dev.localkafka fetch

kafka-up: $(STAMP) ## Start the local Kafka broker on 127.0.0.1:9092 (idempotent)
	$(BIN)/python -m streams.dev.localkafka up --home $(KAFKA_HOME)

kafka-down: $(STAMP) ## Stop the local Kafka broker (idempotent)
	$(BIN)/python -m streams.dev.localkafka down --home $(KAFKA_HOME)

kafka-status: $(STAMP) ## Say whether the local broker is up
	$(BIN)/python -m streams.dev.localkafka status --home $(KAFKA_HOME)

up: $(STAMP) ## Start broker and workers in the background (LEDGER_WORKERS=n; logs in .local/)
	$(BIN)/python -m streams.dev.services up

down: $(STAMP) ## Stop workers and broker
	$(BIN)/python -m streams.dev.services down --workers 8

status: $(STAMP) ## Say what runs
	$(BIN)/python -m streams.dev.services status

test: $(STAMP) ## Run every test; integration tests start their own broker unless KAFKA_BOOTSTRAP_SERVERS is set
	$(BIN)/pytest

test-unit: $(STAMP) ## Run only the tests that need no broker
	$(BIN)/pytest -m "not integration"

lint: $(STAMP) ## ruff (lint and format check) and mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

typecheck: $(STAMP) ## mypy --strict only
	$(BIN)/mypy

schemas: $(STAMP) ## Regenerate the JSON Schemas in schemas/json from the pydantic models
	$(BIN)/python -m schemas.generate

fmt: $(STAMP) ## Format and auto-fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup ## Benchmarks against raw Kafka in the same run (table + .local/bench/bench.json)
	$(BIN)/python -m streams.dev.bench --out .local/bench/bench.json

CHAOS_SECONDS ?= 1200
CHAOS_SEED ?= 1
chaos: setup ## Chaos on a 3-node cluster, both guarantees (CHAOS_SECONDS=1200 CHAOS_SEED=1)
	CHAOS_SECONDS=$(CHAOS_SECONDS) CHAOS_SEED=$(CHAOS_SEED) $(BIN)/pytest -s -p no:cacheprovider \
		--timeout $$(( $(CHAOS_SECONDS) + 900 )) tests/integration/test_chaos.py

demo: setup ## The demo: broker, processors, channels, a month of repayments, checks, report
	$(BIN)/python -m streams.dev.demo

clean: kafka-down ## Stop the broker and delete local data (keeps the jar cache)
	rm -rf .local .pytest_cache .mypy_cache .ruff_cache
