# The two commands of the README, and what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export PREFECT_API_URL ?= http://127.0.0.1:4200/api

.PHONY: setup demo test up down status

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

setup: $(VENV)/.installed

DEMO_MODEL ?= breast-cancer

## demo: the whole pipeline on a fresh machine: platform up, deployments registered, the sample
## model trained and published, `deliver` run, then where the app answers and what it serves.
demo: setup
	$(VENV)/bin/aiship local up
	$(VENV)/bin/aiship deploy
	$(PY) -m app.train .aiship/demo-model
	$(VENV)/bin/aiship model publish .aiship/demo-model --name $(DEMO_MODEL) --no-event
	$(VENV)/bin/aiship deliver $(DEMO_MODEL)
	$(VENV)/bin/aiship status
	@echo "Prefect UI: $${PREFECT_API_URL%/api}  (deployments: $${PREFECT_API_URL%/api}/deployments)"
	@echo "  it asks for the server's API credential: the contents of .aiship/prefect/api-auth-string"

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
