# The two commands of the README, and what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PREFECT_API_URL ?= http://127.0.0.1:4200/api

.PHONY: setup demo test up down status

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

## demo: bring the whole local platform up and print where everything answers.
demo: setup
	$(VENV)/bin/aiship local up

## test: everything CI runs, slow end-to-end tests included (starts the platform first).
test: setup
	$(VENV)/bin/aiship local up
	bash .ci/test-suite

up: setup
	$(VENV)/bin/aiship local up
down: setup
	$(VENV)/bin/aiship local down
status: setup
	$(VENV)/bin/aiship local status
