# Two commands do everything on a fresh clone:
#   make repro   set up .venv (locked, hash-checked), run the whole pipeline (dvc repro) and mirror dvc.lock in
#                MLflow (tools/mirror.py: a run for every stage, also those DVC found current)
#   make test    set up .venv and run the test suite (all tiers)
# make test-fast skips the end-to-end tests (marker e2e); make lint runs ruff.
# make repro-check is CI's reproducibility gate (see tools/repro_check.py).
# make lock regenerates requirements*.txt from pyproject.toml and requirements-dev.in (pip-tools).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Stages run `python -m stages.<name>` through DVC: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
LOCK_VENV := .venv-lock
COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: setup repro test test-fast lint lock repro-check lock-check ui clean

setup: $(INSTALLED)

# The locks pin every package with its hashes (setuptools too); the project itself (stages/) is then
# installed editable on top, built with that setuptools (--no-build-isolation: nothing unpinned fetched).
$(INSTALLED): requirements.txt requirements-dev.txt requirements-data.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements.txt -r requirements-dev.txt
	$(PIP) --no-deps --require-hashes -r requirements-data.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $@

repro: setup
	$(BIN)/dvc repro
	$(BIN)/python -m tools.mirror

test: setup
	$(BIN)/python -m pytest -q tests

# The edit loop: every test but the end-to-end ones (real dvc repro, stage subprocesses, torchrun, servers).
test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e" tests

lint: setup
	$(BIN)/ruff check .

# pip-tools lives in its own venv, never in the project's. Existing pins are kept unless a change needs new ones.
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet pip-tools)
	$(COMPILE) -o requirements.txt pyproject.toml
	$(COMPILE) -o requirements-dev.txt requirements-dev.in

# Run the tiny profile twice in clean temporary copies; fail if any output hash in dvc.lock differs.
repro-check: setup
	$(BIN)/python -m tools.repro_check

# Fail if code or params changed since dvc.lock was written (see tools/lock_check.py).
lock-check: setup
	$(BIN)/python -m tools.lock_check

# Prints the address that opens the runs on the Model-training side (tools/ui.py), then serves the UI.
ui: setup
	$(BIN)/python -m tools.ui

clean:
	rm -rf $(VENV) $(LOCK_VENV) .pytest_cache *.egg-info
