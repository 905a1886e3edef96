# The two commands of the README, and the pieces they are made of.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install stack-up stack-down lint unit functional integration bench clean

## demo: set up, start the stack, apply the SQL, run a worker with demo traffic, print where to look
demo: install
	@dev/demo

## test: set up and run the whole suite (lint, types, unit, functional, integration)
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy finops_app
	$(BIN)/pytest -p no:cacheprovider

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

stack-up: install
	dev/stack up

stack-down:
	dev/stack down

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy finops_app

unit: install
	$(BIN)/pytest tests/unit

functional: install
	$(BIN)/pytest tests/functional

integration: install
	$(BIN)/pytest tests/integration

bench: install
	bench/run

clean:
	rm -rf var build *.egg-info
