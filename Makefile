# Two commands matter: `make demo` (a real DPO fine-tune through the Airflow DAG) and `make test`.
# Both install what they need into .venv first. `make check` (lint + unit tests) is the inner loop.
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

.PHONY: help setup toy demo mlflow mlflow-server check test test-unit test-faults provision lint format schema validate train bench-data clean api toy-trigger api-stop docker-build compose-up compose-down test-docker

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

demo: export DPO_RUNNER := local
demo: toy  ## fine-tune the tiny model on the toy data through the Airflow DAG (SQLite, no Docker, no GPU)
	mkdir -p $(AIRFLOW_HOME)
	$(AIRFLOW) db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1 || { cat $(AIRFLOW_HOME)/db-migrate.log; exit 1; }
	$(AIRFLOW) dags test dpo_finetune -c '$(DEMO_CONF)'
	@echo; echo "== final metrics =="; $(PY) -m dpo_lib metrics artifacts/runs/demo
	@echo; echo "== results (a second make demo is judged against the champion) =="
	@$(PY) -m dpo_lib.results.summary artifacts/runs/demo

# The MLflow server and UI (`make mlflow`, the tracking tests) have a venv of their own, at the version of
# .venv's client (mlflow-skinny): the full `mlflow` brings scikit-learn, which transformers imports whenever it
# is installed, ≈ 1.2 s more for every process that loads a model.
MLFLOW_VENV := .venv-mlflow
MLFLOW_PIN := $(shell sed -n 's/^mlflow-skinny==\([^ ]*\).*/mlflow==\1/p' requirements.txt)

$(MLFLOW_VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/pip install -q --upgrade pip
	$(MLFLOW_VENV)/bin/pip install -q "$(MLFLOW_PIN)"
	touch $@

mlflow-server: $(MLFLOW_VENV)/.installed  ## create .venv-mlflow: the MLflow server and UI

MLFLOW_PORT ?= 5000
mlflow: setup mlflow-server  ## the MLflow UI (port MLFLOW_PORT) over MLFLOW_TRACKING_URI's store, else the embedded one (artifacts/runs/_mlflow)
	@$(PY) -m dpo_lib.tracking.ui --port $(MLFLOW_PORT) --mlflow $(MLFLOW_VENV)/bin/mlflow

check: lint test-unit  ## the inner loop: ruff, then the unit tests (tests/unit: seconds each, no services)

test-unit: setup
	$(PY) -m pytest -q -n auto --dist loadfile tests/unit

provision:  ## install the host packages the system and fault tests use (Debian; root): docker, postgres, redis
	bash tests/provision-host.sh

# pytest-xdist workers: one per core, at most 4 (PYTEST_WORKERS=0: one process). tests/conftest.py groups
# the tests so that a module, and all the Docker modules together, run on one worker, longest first.
PYTEST_WORKERS ?= auto
XDIST := -n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadscope --no-loadscope-reorder

test: setup mlflow-server provision  ## everything: unit, integration (Airflow, storage emulator), system (docker, celery), faults
	$(PY) -m pytest -q $(XDIST) tests

test-faults: setup  ## the fault tests: kills, outages, full disks, hostile input, planted secrets (docs/reliability.md)
	$(PY) -m pytest -q $(XDIST) -m faults

lint: setup  ## ruff lint and format check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

schema: setup  ## regenerate configs/schemas and the docs' tables from the run contract (dpo_lib/spec.py)
	$(PY) -m dpo_lib schema --write

format: setup  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

validate: setup  ## validate a dataset: make validate DATASET=path/or/uri
	$(PY) -m dpo_lib validate $(DATASET)

train: toy  ## train from the CLI: make train ARGS="model=tiny datasets=[toy] loss=dpo exp_name=x"
	$(PY) train.py $(ARGS)

bench-data: setup  ## dataset validation speed (MB/s) and peak memory, JSON array and JSON Lines (docs/benchmarks.md)
	$(PY) -m dpo_lib bench-data

# --- Serving: Airflow's services on this machine (docs/serving.md) ---
# Settings (AIRFLOW_PORT, AIRFLOW_ADMIN_USER, AIRFLOW_ADMIN_PASSWORD, DPO_GPU_SLOTS, ...) come from
# the environment, and from .env when there is one (.env.example lists them all).
WITH_DOTENV := set -a; [ ! -f .env ] || . ./.env; set +a;
TOY_CONF ?= {"dataset_uri": "data/dataset.json", "model": "tiny", "loss": "dpo", "exp_name": "toy"}

api: setup  ## run Airflow (api-server, scheduler, dag-processor, triggerer; SQLite) in the foreground; Ctrl-C stops it
	@$(WITH_DOTENV) exec $(PY) -m dpo_lib services

toy-trigger: toy  ## trigger the toy fine-tune through the REST API (starts the services if needed); print its metrics
	@$(WITH_DOTENV) $(PY) -m dpo_lib services --ensure && $(PY) -m dpo_lib trigger --conf '$(TOY_CONF)' --wait

api-stop: setup  ## stop services that `make toy-trigger` started in the background
	@$(WITH_DOTENV) $(PY) -m dpo_lib services --stop

# --- Containers: containers/, docker-compose.yaml (docs/containers.md) ---
COMPOSE ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# The group owning the Docker socket, so the scheduler and worker (uid 50000) may use it.
DOCKER_GID ?= $(shell stat -c %g /var/run/docker.sock 2>/dev/null || echo 999)

DPO_TRAINER_IMAGE ?= dpo-trainer:latest
DPO_AIRFLOW_IMAGE ?= dpo-airflow:latest
DOCKER_BUILD_ARGS ?=

docker-build:  ## build the GPU trainer image and the Airflow image (default bases from registries; DOCKER_BUILD_ARGS=...)
	docker build -f containers/trainer/Dockerfile $(DOCKER_BUILD_ARGS) -t $(DPO_TRAINER_IMAGE) .
	docker build -f containers/airflow/Dockerfile $(DOCKER_BUILD_ARGS) -t $(DPO_AIRFLOW_IMAGE) .

compose-up: .env  ## deploy on this GPU host: PostgreSQL, Airflow, the trainer image (COMPOSE_PROFILES=celery: + Redis, worker)
	DOCKER_GID=$(DOCKER_GID) $(COMPOSE) up -d --build
	@echo "Airflow: http://localhost:$$(grep -E '^AIRFLOW_PORT=' .env | cut -d= -f2 | grep . || echo 8080) ($(COMPOSE) ps: health)"

compose-down:  ## stop the stack; its volumes (database, staging, artifacts, models) are kept
	DOCKER_GID=$(DOCKER_GID) $(COMPOSE) down

.env:
	@echo "no .env: cp .env.example .env and set the secrets it lists (docs/containers.md)" >&2; exit 1

test-docker: setup provision  ## the container tests: images, docker runner, kill, compose file (starts dockerd)
	$(PY) -m pytest -q tests/system/docker

clean:  ## remove generated models, data, runs and the local Airflow home
	rm -rf models data artifacts runs var .airflow .pytest_cache .ruff_cache
