# ordermail — `make demo` and `make test` work on a fresh machine: they install what is missing
# (Debian packages when root, the virtualenv, Kafka jars) and start the local stack.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK := deploy/local/stack

.PHONY: setup system-deps stack-up-registry demo test unit integration chaos bench k8s-validate lint format stack-up stack-down clean

setup: system-deps $(STAMP)

system-deps:
	@deploy/local/system-deps

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $(STAMP)

stack-up: setup
	@$(STACK) up

# The tests also need a real Schema Registry (Apicurio, from Maven Central).
stack-up-registry: setup
	@$(STACK) up --registry

stack-down:
	@$(STACK) down

demo: stack-up
	@$(BIN)/python deploy/local/demo.py

test: stack-up-registry lint
	$(BIN)/ordermail schemas check
	$(BIN)/ordermail templates check
	$(BIN)/pytest

unit: setup
	$(BIN)/pytest tests/unit

integration: stack-up-registry
	$(BIN)/pytest tests/integration

# Full-size chaos (600 events a scenario, 30 s relay outage); `make test` runs a reduced one.
chaos: stack-up
	ORDERMAIL_CHAOS_SIZE=full $(BIN)/pytest tests/chaos

# Figures in bench/results/latest.json; `make bench ARGS="--events 5000"` to scale.
bench: stack-up
	$(BIN)/python -m bench.run $(ARGS)

# Render, schema-check and policy-scan the Kubernetes manifests and the Dockerfile, offline.
k8s-validate: setup
	@deploy/k8s/validate

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: stack-down
	rm -rf .local $(VENV) .mypy_cache .ruff_cache .pytest_cache
