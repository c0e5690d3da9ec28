# ordermail — `make demo` and `make test` work on a fresh machine: they install what is missing
# (Debian packages when root, the virtualenv, Kafka jars) and start the local stack.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
STACK := deploy/local/stack
UV_COMPILE = $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" $(LOCK_ARGS)

.PHONY: setup cjk-faces catalogs extract lock system-deps stack-up-registry demo test unit integration chaos bench k8s-validate lint format stack-up stack-down clean

setup: system-deps $(STAMP) catalogs cjk-faces

# The Typst engine's cut of the Noto CJK faces (rendering/cjk_faces.py): ~1 min the first time,
# then only when the installed collection or the character list changes.
cjk-faces: $(STAMP)
	@$(BIN)/python -m rendering.cjk_faces > /dev/null

# Translations: rendering/templates/**/locale/<language>/LC_MESSAGES/messages.po, compiled by Babel
# to .mo (not committed) whenever a .po is newer; `ordermail templates check` checks the catalogs.
CATALOGS := $(patsubst %.po,%.mo,$(wildcard rendering/templates/shared/locale/*/LC_MESSAGES/*.po \
	rendering/templates/sets/*/locale/*/LC_MESSAGES/*.po))
catalogs: $(CATALOGS)
%.mo: %.po | $(STAMP)
	@$(BIN)/pybabel compile --statistics -i $< -o $@

# After changing a translatable text: re-extracts messages.pot and merges it into every language's
# .po (new texts arrive untranslated, changed ones fuzzy: translate them, then `make catalogs`).
extract: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k N_ --no-location --sort-output --project ordermail \
	  --copyright-holder ordermail -o rendering/templates/shared/locale/messages.pot .
	$(BIN)/pybabel update --width 100 -i rendering/templates/shared/locale/messages.pot \
	  -d rendering/templates/shared/locale

system-deps:
	@deploy/local/system-deps

# Installs exactly the lock files' versions (requirements/, hash-checked), then ordermail itself
# without dependencies; a changed lock file or pyproject.toml installs again.
$(STAMP): pyproject.toml requirements/build-lock.txt requirements/dev-lock.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/build-lock.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev-lock.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Regenerates the lock files from pyproject.toml with uv (a dev dependency); run it after changing a
# dependency there, and commit requirements/ with pyproject.toml (tests/deploy/test_lock.py fails
# until they agree). Pins that still satisfy pyproject.toml are kept; to move to the newest allowed
# releases: `make lock LOCK_ARGS=--upgrade` (or LOCK_ARGS="--upgrade-package NAME").
#   dev-lock.txt   - runtime + dev extra: what `make setup` installs and the tests run with;
#   lock.txt       - runtime only, the same versions (constrained by dev-lock.txt): what the image installs;
#   build-lock.txt - pip and pyproject.toml's build-system.requires (setuptools).
# Every platform's wheels and sdists are hashed (--universal), so Linux, macOS and the image all install.
lock: $(STAMP)
	$(UV_COMPILE) pyproject.toml --extra dev -o requirements/dev-lock.txt
	$(UV_COMPILE) pyproject.toml -c requirements/dev-lock.txt -o requirements/lock.txt
	$(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], "pip", sep="\n")' \
	  | $(UV_COMPILE) - -o requirements/build-lock.txt

stack-up: setup
	@$(STACK) up

# The tests also need a real Schema Registry (Apicurio, from Maven Central) and, as root, a real
# relay (Postfix; without root the relay tests skip, saying why).
RELAY_FLAG := $(if $(filter 0,$(shell id -u)),--relay)
stack-up-registry: setup
	@$(STACK) up --registry $(RELAY_FLAG)

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

# Full-size chaos (600 events a scenario, 30 s outages), the cluster scenarios on a three-broker
# cluster the tests start beside the single broker; `make test` runs a reduced one.
chaos: stack-up
	ORDERMAIL_CHAOS_SIZE=full $(BIN)/pytest tests/chaos

# Figures in bench/results/latest.json, per template set (one per engine unless ARGS names some:
# `make bench ARGS="--set default --set nordic"`), and scripts.json (each script's receipt
# against a Latin one); `make bench ARGS="--events 5000"` to scale.
bench: stack-up
	$(BIN)/python -m bench.run $(ARGS)
	$(BIN)/python -m bench.scripts

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
