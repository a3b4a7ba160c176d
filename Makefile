# The two commands of the README: `make train` and `make test`. Everything lives in .venv at the repo root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help setup train test test-fast strip-notebooks clean-venv

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@echo "installing isc and its dependencies into $(VENV)/ (a few minutes the first time; pip's log: $(VENV)/pip.log)"
	$(BIN)/python -m pip install -q --upgrade pip --log $(VENV)/pip.log
	$(BIN)/python -m pip install -q -e ".[dev]" --log $(VENV)/pip.log
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install isc with its dev tools (torch <= 2.14.1)

train: $(STAMP) ## set up, build the mini-DISC if missing, train the default experiment; ends with µAP and the run's paths (ARGS=overrides)
	$(BIN)/isc-train $(ARGS)

test: $(STAMP) ## lint and format check (ruff), then the whole test suite
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --durations=10 $(ARGS)

test-fast: $(STAMP) ## the tests not marked slow
	$(BIN)/python -m pytest -n 2 -m "not slow" $(ARGS)

strip-notebooks: $(STAMP) ## clear the outputs of notebooks/*.ipynb before committing them (the tests check)
	$(BIN)/python notebooks/strip_outputs.py

clean-venv: ## remove .venv (data/ and outputs/ are kept)
	rm -rf $(VENV)
