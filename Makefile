# Two commands matter: `make demo` (a real DPO fine-tune through the Airflow DAG) and `make test`.
# Both install what they need into .venv first.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
AIRFLOW := $(VENV)/bin/airflow

# A project-local Airflow on SQLite; nothing outside this folder is touched.
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION := False
export DPO_WORKDIR := $(CURDIR)
export PYTHONUNBUFFERED := 1

DEMO_CONF ?= {"dataset_uri": "data/dataset.json", "model": "tiny", "loss": "dpo", "exp_name": "demo"}
DATASET ?= data/dataset.json
ARGS ?= model=tiny datasets=[toy] loss=dpo exp_name=cli

.PHONY: help setup toy demo test lint format validate train clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed  ## create .venv with the pinned requirements

models/tiny/config.json: | setup
	$(PY) -m dpo_lib make-tiny-model models/tiny

data/dataset.json: | setup
	$(PY) -m dpo_lib make-toy-data data/dataset.json

toy: models/tiny/config.json data/dataset.json  ## build the tiny model and the toy dataset (idempotent)

demo: toy  ## fine-tune the tiny model on the toy data through the Airflow DAG (SQLite, no Docker, no GPU)
	mkdir -p $(AIRFLOW_HOME)
	$(AIRFLOW) db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { cat $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	$(AIRFLOW) dags test dpo_finetune -c '$(DEMO_CONF)'
	@echo; echo "== final metrics =="; $(PY) -m dpo_lib metrics artifacts/runs/demo

test: setup  ## run the test suite
	$(PY) -m pytest -q

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

validate: setup  ## validate a dataset: make validate DATASET=path/or/uri
	$(PY) -m dpo_lib validate $(DATASET)

train: toy  ## train from the CLI: make train ARGS="model=tiny datasets=[toy] loss=dpo exp_name=x"
	$(PY) train.py $(ARGS)

clean:  ## remove generated models, data, runs and the local Airflow home
	rm -rf models data artifacts var .airflow .pytest_cache .ruff_cache
