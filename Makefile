# pycalico — see README.md. All targets work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
# An absolute interpreter path: never a pyenv shim.
PY_BOOT ?= $(shell python3 -c 'import sys; print(sys.executable)' 2>/dev/null || echo /usr/bin/python3)
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help deps venv test test-fast test-python test-collection test-molecule test-vm lint bench lab lab-down clean

help:
	@echo "make lab       deploy a real pycalico network on local test hosts"
	@echo "make test      install what is needed and run the whole test suite (incl. molecule)"
	@echo "make test-fast the suite without the molecule scenarios"
	@echo "make test-molecule [SCENARIOS='default vxlan']  only the molecule scenarios"
	@echo "make bench     run every benchmark in bench/"

deps:
	@scripts/install-deps.sh

$(VENV)/.stamp: pyproject.toml
	$(PY_BOOT) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp

test: test-fast test-molecule

test-fast: deps venv lint test-python test-collection

lint: venv
	$(VENV)/bin/ruff check src tests bench

test-python: deps venv
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-collection: deps venv
	@if [ -x scripts/check-collection.sh ]; then scripts/check-collection.sh; \
	 else echo "test-collection: no collection checks yet"; fi

SCENARIOS ?=
test-vm: deps venv
	scripts/test-vm.sh

test-molecule: deps venv
	scripts/molecule.sh $(SCENARIOS)

bench: deps venv
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

lab: deps venv
	scripts/lab.sh up

lab-down:
	scripts/lab.sh down

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
