"""The fine-tune task graph, built once for every DAG that runs it (``dpo_finetune``, ``dpo_nightly``).

validate → stage_dataset → train → evaluate, with cleanup as the teardown of staging.
DAG files call :func:`build_finetune_dag` and only choose the DAG's id, schedule and Param
defaults, so the on-demand and the nightly fine-tune can never drift apart.

This is the one module of ``dpo_lib.orchestration`` that imports Airflow, and only DAG
files import it; like them it never imports torch (the task bodies import lazily).

Retries are chosen per task:

* ``validate`` fails at once on a bad request, config or dataset (``AirflowFailException``:
  retrying cannot fix it) but retries anything else, such as storage being unreachable;
* ``stage_dataset`` retries storage outages with exponential backoff;
* ``train`` retries at least twice with exponential backoff and resumes from the run's newest
  checkpoint, so a retry repeats only the steps since it; its first delay (30 s) can be set
  with ``DPO_TRAIN_RETRY_DELAY_S`` (seconds; the fault tests use 1 to retry at once);
* ``evaluate`` retries once, ``cleanup`` a couple of times (removing a folder is idempotent).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from dpo_lib.orchestration.names import GPU_POOL
from dpo_lib.orchestration.request import DEFAULT_REQUEST, RequestError, request_schema, validate_request
from dpo_lib.orchestration.runners import command_task
from dpo_lib.orchestration.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_ACTIVE_RUNS = 16

# Per task: retries, first delay, backoff multiplier (0: constant), longest delay.
RETRIES: dict[str, dict[str, Any]] = {
    "validate": {"retries": 2, "retry_delay": timedelta(seconds=10)},
    "stage_dataset": {
        "retries": 3,
        "retry_delay": timedelta(seconds=15),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=5),
    },
    "train": {
        "retries": 2,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    },
    "evaluate": {"retries": 1, "retry_delay": timedelta(seconds=10)},
    "cleanup": {"retries": 2, "retry_delay": timedelta(seconds=5)},
}


def retry_options(task_id: str, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``RETRIES[task_id]``, with ``train``'s first delay from ``DPO_TRAIN_RETRY_DELAY_S`` when it is set."""
    options = dict(RETRIES[task_id])
    value = (os.environ if env is None else env).get("DPO_TRAIN_RETRY_DELAY_S", "").strip()
    if task_id == "train" and value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = math.nan
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"DPO_TRAIN_RETRY_DELAY_S={value!r} is not a number of seconds (0 or more)")
        options["retry_delay"] = timedelta(seconds=seconds)
    return options


def max_active_runs_from_env() -> int:
    """``DPO_MAX_ACTIVE_RUNS`` (default 16): how many ``dpo_finetune`` runs may be active at once."""
    return int(os.environ.get("DPO_MAX_ACTIVE_RUNS") or DEFAULT_MAX_ACTIVE_RUNS)


def request_params(defaults: Mapping[str, Any] | None = None) -> dict[str, Param]:
    """The DAG's Params: one per request field, from the request JSON Schema, with valid defaults.

    ``defaults`` replaces some of :data:`DEFAULT_REQUEST`; the result is checked here, so a
    bad default (say, from an Airflow Variable) is an import error naming the field rather
    than a run that fails later.
    """
    schema = request_schema()
    values = {**DEFAULT_REQUEST, **(defaults or {})}
    validate_request(values)
    return {name: Param(values[name], **schema["properties"][name]) for name in schema["properties"]}


def log_try(context: Mapping[str, Any]) -> None:
    """``on_execute_callback``: the task log says which try this is and what a retry does."""
    ti, task_ = context["ti"], context["task"]
    log.info(
        "%s: try %s of %s for run %s%s",
        ti.task_id, ti.try_number, task_.retries + 1, ti.run_id,
        " (a retry: it repeats this task's work idempotently, and train resumes from its newest checkpoint)"
        if ti.try_number > 1 else "",
    )  # fmt: skip


def log_retry(context: Mapping[str, Any]) -> None:
    """``on_retry_callback``: why this try failed and that Airflow will run the task again."""
    ti, task_ = context["ti"], context["task"]
    log.warning(
        "%s: try %s of %s failed (%s); Airflow retries it after its retry delay",
        ti.task_id, ti.try_number, task_.retries + 1, context.get("exception"),
    )  # fmt: skip


def _task_kwargs(task_id: str) -> dict[str, Any]:
    return {**retry_options(task_id), "on_execute_callback": log_try, "on_retry_callback": log_retry}


def build_finetune_dag(
    dag_id: str,
    *,
    schedule: Any = None,
    param_defaults: Mapping[str, Any] | None = None,
    max_active_runs: int | None = None,
    description: str = "DPO fine-tune: validate, stage the dataset, train, evaluate, clean up",
    doc_md: str | None = None,
    tags: list[str] | None = None,
    settings: Settings | None = None,
) -> DAG:
    """A DAG running the fine-tune graph; ``schedule=None`` makes it on-demand only.

    DAGs are created unpaused (a run triggered through the API starts with no manual step),
    never catch up, and cap their active runs (``max_active_runs``; default
    ``DPO_MAX_ACTIVE_RUNS``). ``train`` runs in the ``gpu`` pool, so concurrent runs share
    the GPUs instead of oversubscribing them.
    """
    settings = settings or Settings.from_env()
    with DAG(
        dag_id=dag_id,
        schedule=schedule,
        description=description,
        params=request_params(param_defaults),
        max_active_runs=max_active_runs if max_active_runs is not None else max_active_runs_from_env(),
        catchup=False,
        is_paused_upon_creation=False,
        default_args={"retries": 0},
        tags=tags or ["dpo"],
        doc_md=doc_md,
    ) as dag:

        @task(**_task_kwargs("validate"))
        def validate() -> dict:
            """Request, training config and dataset; a bad one fails here and is not retried."""
            from dpo_lib.orchestration import tasks

            context = get_current_context()
            try:
                return tasks.validate(dict(context["params"]), dag_id=dag_id, run_id=context["run_id"])
            except RequestError as exc:
                raise AirflowFailException(str(exc)) from None

        @task(**_task_kwargs("stage_dataset"))
        def stage_dataset(plan: dict) -> dict:
            from dpo_lib.orchestration import tasks

            return tasks.stage(plan)

        @task(**_task_kwargs("cleanup"))
        def cleanup(plan: dict) -> None:
            from dpo_lib.orchestration import tasks

            tasks.cleanup(plan)

        plan = validate()
        staged = stage_dataset(plan)
        train = command_task("train", "train_command", settings, pool=GPU_POOL, pool_slots=1, **_task_kwargs("train"))
        evaluate = command_task("evaluate", "evaluate_command", settings, **_task_kwargs("evaluate"))
        staged >> train >> evaluate >> cleanup(plan).as_teardown(setups=staged)
    return dag
