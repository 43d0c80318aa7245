# pycalico — see README.md. All targets work on a fresh Debian 12 machine as root.
SHELL := /bin/bash
# The interpreter the collection builds /opt/pycalico with on nodes: Debian's python3
# (statically linked, _socket built in: each CNI call starts ~1 ms sooner than with a
# shared-libpython pyenv build). Elsewhere the first python3 on PATH, never a shim.
PY_BOOT ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || python3 -c 'import sys; print(sys.executable)')
VENV ?= .venv
PY := $(CURDIR)/$(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help deps venv test test-fast test-python test-collection test-molecule test-vm test-day2 lint bench lab lab-down clean

help:
	@echo "make lab       deploy a real pycalico network on local test hosts"
	@echo "make test      install what is needed and run the whole test suite (incl. molecule)"
	@echo "make test-fast the suite without the molecule scenarios"
	@echo "make test-molecule [SCENARIOS='default vxlan']  only the molecule scenarios"
	@echo "make bench     run every benchmark in bench/"

deps:
	@scripts/install-deps.sh

$(VENV)/.stamp: pyproject.toml
	@if [ -x $(PY) ] && [ "$$(cat $(VENV)/.interpreter 2>/dev/null)" != "$(PY_BOOT)" ]; then \
	  echo "venv: $(VENV) was made with another interpreter; remaking it with $(PY_BOOT)"; rm -rf $(VENV); fi
	$(PY_BOOT) -m venv $(VENV)
	echo "$(PY_BOOT)" > $(VENV)/.interpreter
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.stamp
	@[ "$$(cat $(VENV)/.interpreter 2>/dev/null)" = "$(PY_BOOT)" ] || { rm -f $(VENV)/.stamp; $(MAKE) --no-print-directory $(VENV)/.stamp; }

test: test-fast test-molecule

test-fast: deps venv lint test-python test-collection

lint: venv
	$(VENV)/bin/ruff check src tests bench plugins
	$(VENV)/bin/mypy  # src, plugins, tests and bench ([tool.mypy] files)

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

# Day-2 operations on podman hosts (not in `make test`): live encapsulation migration (50 min at load 15), rolling upgrade with rollback.
test-day2: deps venv
	scripts/molecule.sh migrate upgrade

bench: deps venv
	@set -e; for b in bench/*.py; do echo "== $$b"; $(PY) $$b; done

lab: deps venv
	scripts/lab.sh up

lab-down:
	scripts/lab.sh down

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
