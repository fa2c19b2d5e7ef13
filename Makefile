# The README's commands. Each sets itself up on a fresh machine (Python 3.11+ and make): a
# virtualenv inside the repository, installed from pyproject.toml. Settings you export
# (PIPELINE_*, DAGSTER_HOME) win over the defaults below.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DAGSTER_HOME ?= $(CURDIR)
export PIPELINE_DATA_ROOT ?= $(CURDIR)/data

.PHONY: demo test test-fast dev bench contracts setup browser clean-data

CHROMIUM ?= /usr/bin/chromium

## make setup: the virtualenv, and the browser the UI test drives
setup: $(STAMP) browser

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The UI test drives Debian's chromium through the `playwright` package of the dev extra (no
# browser download). Installed here as root where apt-get exists; elsewhere install `chromium`
# yourself, or the browser test skips and says why.
browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the UI test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
			|| echo "warning: apt-get could not install chromium; the UI browser test will skip"; \
	else \
		echo "note: no $(CHROMIUM), and apt-get needs root: the UI browser test will skip"; \
	fi

## make demo: generate demo sources, materialize every asset, run every check, print a summary
demo: $(STAMP)
	$(BIN)/pipeline demo

## make test: the whole suite, slow scale runs included
test: setup
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
	$(BIN)/python bench/hq_reconcile.py
	$(BIN)/python bench/market_features.py
	$(BIN)/python bench/faults.py

## make contracts: regenerate the published JSON Schemas and contract docs from contracts/
contracts: $(STAMP)
	$(BIN)/python -m contracts.publish

clean-data:
	rm -rf $(PIPELINE_DATA_ROOT)/staging $(PIPELINE_DATA_ROOT)/bronze $(PIPELINE_DATA_ROOT)/silver $(PIPELINE_DATA_ROOT)/gold $(PIPELINE_DATA_ROOT)/hq
