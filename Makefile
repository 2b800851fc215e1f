# Two entry points on a fresh machine (Python 3.11): `make quickstart` and `make test`
# (which runs `make lint` first; `make format` rewrites the files the formatter would change).
# Both create .venv and install everything first; see README for why t5 goes in with --no-deps.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
QUICKSTART_DIR ?= runs/quickstart

.PHONY: install quickstart lint format test clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c $(CONSTRAINTS) -e '.[test]'
	$(PIP) install --quiet -c $(CONSTRAINTS) --no-deps t5==0.9.4
	$(PY) -m pause_lm.install_check
	touch $@

quickstart: install
	$(PY) -m pause_lm.train --gin_file=gin/quickstart.gin --gin.MODEL_DIR="'$(QUICKSTART_DIR)'"

# The linter and formatter first (settings in ruff.toml): a style slip fails in seconds.
lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# --dist loadgroup: tests marked with one xdist_group share a worker (and its module fixtures).
test: lint
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

clean:
	rm -rf $(VENV) runs
