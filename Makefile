# make demo: the main job end to end on a fresh machine. make test: the whole test suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean-state bench

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m outreach.demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/perf/run.py

clean-state:
	rm -rf .outreach

# The docker-compose.yaml containers' commands as processes: CeleryExecutor with two workers on one DAG run
# (needs Redis at 127.0.0.1:6379, else that part is skipped) and the default LocalExecutor profile.
.PHONY: deploy-check
deploy-check: $(STAMP)
	$(BIN)/python bench/deploy/celery_check.py
