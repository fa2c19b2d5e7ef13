# The README's commands. Each sets itself up on a fresh machine (Python 3.11+ and make): a
# virtualenv inside the repository, installed from pyproject.toml. Settings you export
# (PIPELINE_*, DAGSTER_HOME) win over the defaults below.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME ?= $(CURDIR)
export PIPELINE_DATA_ROOT ?= $(CURDIR)/data

.PHONY: demo test test-fast dev bench contracts setup clean-data

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## make demo: generate demo sources, materialize every asset, run every check, print a summary
demo: $(STAMP)
	$(BIN)/pipeline demo

## make test: the whole suite, slow scale runs included
test: $(STAMP)
	$(BIN)/python -m contracts.publish --check
	$(BIN)/pytest

## make test-fast: the suite without the runs marked slow
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

## make dev: the Dagster UI (and daemon) on http://127.0.0.1:3000
dev: $(STAMP)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## make bench: the benchmarks in bench/, each printing its figures and the ratio to plain engines
bench: $(STAMP)
	$(BIN)/python bench/lake_io.py
	$(BIN)/python bench/sample.py
	$(BIN)/python bench/gex_import.py
	$(BIN)/python bench/staging_export.py
	$(BIN)/python bench/bronze_day.py
	$(BIN)/python bench/hq_export.py
	$(BIN)/python bench/market_features.py

## make contracts: regenerate the published JSON Schemas and contract docs from contracts/
contracts: $(STAMP)
	$(BIN)/python -m contracts.publish

clean-data:
	rm -rf $(PIPELINE_DATA_ROOT)/staging $(PIPELINE_DATA_ROOT)/bronze $(PIPELINE_DATA_ROOT)/silver $(PIPELINE_DATA_ROOT)/gold $(PIPELINE_DATA_ROOT)/hq
