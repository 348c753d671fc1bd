"""The fine-tune task graph, built once for every DAG that runs it (``dpo_finetune``, ``dpo_nightly``):
validate → stage → train → evaluate → publish → compare → promote, with cleanup as the teardown of
validate and stage. ``validate`` returns the run spec's path and every later task takes it. Retries and
time limits per task: :func:`task_options` (docs/serving.md#retries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, NoReturn

from airflow.sdk import DAG, Context, Variable, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from dpo_lib.dag.assets import DATASET_ALIAS, MODEL_ALIAS
from dpo_lib.dag.notifiers import RunNotifier
from dpo_lib.dag.params import request_params
from dpo_lib.dag.runners import spec_command_task
from dpo_lib.orchestration.names import GPU_POOL
from dpo_lib.settings import Settings
from dpo_lib.spec import SpecError

log = logging.getLogger(__name__)

SHORT = timedelta(minutes=10)


def backoff(first: timedelta, longest: timedelta) -> dict[str, Any]:
    """Retry delays that double from ``first`` up to ``longest``."""
    return {"retry_delay": first, "retry_exponential_backoff": 2.0, "max_retry_delay": longest}


def task_options(task_id: str, settings: Settings) -> dict[str, Any]:
    """Retries, retry delays and the time limit of one try, per task."""
    longer = timedelta(minutes=settings.task_timeout_min)
    train_delay = timedelta(seconds=settings.train_retry_delay_s)
    options: dict[str, dict[str, Any]] = {
        "validate": {"retries": 2, "retry_delay": timedelta(seconds=10), "execution_timeout": SHORT},
        "stage": {"retries": 3, **backoff(timedelta(seconds=15), timedelta(minutes=5)), "execution_timeout": longer},
        "train": {
            "retries": 2,
            **backoff(train_delay, timedelta(minutes=10)),
            "execution_timeout": timedelta(hours=settings.train_timeout_h),
        },
        "evaluate": {"retries": 1, "retry_delay": timedelta(seconds=10), "execution_timeout": longer},
        "cleanup": {"retries": 2, "retry_delay": timedelta(seconds=5), "execution_timeout": SHORT},
        "publish": {"retries": 3, **backoff(timedelta(seconds=30), timedelta(minutes=10)), "execution_timeout": longer},
        "compare": {"retries": 1, "retry_delay": timedelta(seconds=10), "execution_timeout": longer},
        "promote": {"retries": 3, **backoff(timedelta(seconds=15), timedelta(minutes=5)), "execution_timeout": SHORT},
    }
    return {**options[task_id], "on_execute_callback": log_try, "on_retry_callback": log_retry}


def variable_values(
    variables: Mapping[str, str] | None, context: Mapping[str, Any], get: Callable[..., Any]
) -> dict[str, Any]:
    """The Airflow Variables (read with ``get``, ``Variable.get`` in a task) standing in for the
    request fields the run's conf leaves out."""
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    values = {}
    for field, name in (variables or {}).items():
        if field not in conf and (value := get(name, default=None)) is not None:
            values[field] = value
    return values


def refuse(task_id: str, exc: SpecError) -> NoReturn:
    """Fail the task for good with ``exc``'s reasons alone: retrying cannot fix a bad request or dataset."""
    log.error("%s refused the run; fix the request and trigger it again (no retry):\n%s", task_id, exc)
    raise AirflowFailException(str(exc)) from None


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


def build_finetune_dag(
    dag_id: str,
    *,
    schedule: Any = None,
    param_defaults: Mapping[str, Any] | None = None,
    runtime_variables: Mapping[str, str] | None = None,
    max_active_runs: int | None = None,
    description: str = "DPO fine-tune: validate, stage data and model, train, evaluate, publish, compare, promote",
    doc_md: str | None = None,
    tags: list[str] | None = None,
    settings: Settings | None = None,
) -> DAG:
    """A DAG running the fine-tune graph; ``schedule=None`` makes it on-demand only.

    ``runtime_variables`` maps request fields to Airflow Variables that ``validate`` reads when a
    run's conf does not give the field (at run time, never while the file is parsed).

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
        params=request_params(param_defaults, config_dir=settings.config_dir),
        max_active_runs=max_active_runs if max_active_runs is not None else settings.max_active_runs,
        catchup=False,
        is_paused_upon_creation=False,
        default_args={"retries": 0, "owner": "ml-platform"},
        tags=tags or ["dpo"],
        doc_md=doc_md,
        on_failure_callback=RunNotifier("failure"),  # email through the dpo_notify Connection; none: silent
    ) as dag:

        @task(**task_options("validate", settings))
        def validate() -> str:
            """The request and its training config, resolved into the run spec; a bad one fails here."""
            from dpo_lib.orchestration import tasks

            context = get_current_context()
            request = {**dict(context["params"]), **variable_values(runtime_variables, context, Variable.get)}
            try:
                spec_path = tasks.validate(request, dag_id=dag_id, run_id=context["run_id"])
            except SpecError as exc:
                refuse("validate", exc)
            from dpo_lib.orchestration.runs import record_run
            from dpo_lib.spec import RunSpec

            record_run(RunSpec.read(spec_path))  # the run's report finds its folder from (dag_id, run_id)
            return str(spec_path)

        @task(multiple_outputs=False, outlets=[DATASET_ALIAS], **task_options("stage", settings))
        def stage(spec_path: str) -> dict:
            """The dataset copied into the run's folder and validated there, and the model_uri's model staged; bad data fails here."""
            from dpo_lib.dag.assets import emit_dataset
            from dpo_lib.orchestration import tasks

            try:
                manifest = tasks.stage(spec_path)
            except SpecError as exc:
                refuse("stage", exc)
            context = get_current_context()
            emit_dataset(context["outlet_events"], manifest, dag_id=dag_id, run_id=context["run_id"])
            return manifest

        @task(multiple_outputs=False, **task_options("publish", settings))
        def publish(spec_path: str) -> dict:
            """Results synced to MLflow, stored under output_uri (upload.json last), registered; the champion fetched."""
            from dpo_lib.results.publish import publish as publish_run

            return publish_run(spec_path)

        @task(multiple_outputs=False, **task_options("promote", settings))
        def promote(spec_path: str) -> dict:
            """The champion gate's decision on compare's numbers: the alias moved or kept, the decision recorded,
            the report stored."""
            from dpo_lib.dag.assets import emit_model
            from dpo_lib.dag.notifiers import airflow_base_url
            from dpo_lib.results.promote import promote as promote_run

            promotion = promote_run(spec_path, report_base=airflow_base_url())
            context = get_current_context()
            emit_model(context["outlet_events"], promotion, dag_id=dag_id, run_id=context["run_id"])
            return promotion

        @task(**task_options("cleanup", settings))
        def cleanup(spec_path: str) -> None:
            """The run's staging folder and stray containers removed; a run that promote did not finish
            gets its report.html here."""
            from dpo_lib.dag.notifiers import airflow_base_url
            from dpo_lib.orchestration import tasks

            states = run_task_states(get_current_context())
            tasks.cleanup(spec_path, task_states=states, report_base=airflow_base_url())

        spec_path = validate()
        staged = stage(spec_path)
        train = spec_command_task("train", spec_path, settings, pool=GPU_POOL, pool_slots=1,
                                  **task_options("train", settings))  # fmt: skip
        evaluate = spec_command_task("evaluate", spec_path, settings, **task_options("evaluate", settings))
        compare = spec_command_task("compare", spec_path, settings, **task_options("compare", settings))
        promoted = promote(spec_path)
        staged >> train >> evaluate >> publish(spec_path) >> compare >> promoted
        promoted >> cleanup(spec_path).as_teardown(setups=[spec_path, staged])
    wire_promotion(dag)
    return dag


def run_task_states(context: Context) -> dict[str, str | None] | None:
    """This run's task states now, task id to state in the DAG's order; None (a warning) if Airflow cannot say."""
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    try:
        states = context["ti"].get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    except Exception as exc:
        log.warning("the run's task states are not available (%s)", exc)
        return None
    order = [task.task_id for task in context["dag"].task_group.topological_sort()]
    return {task_id: states.get(task_id) for task_id in order}


def wire_promotion(dag: DAG) -> None:
    """The ``promote`` task (when the DAG has one) emails each promotion and has the registered model's asset
    alias as its outlet (it adds the event itself: :func:`dpo_lib.dag.assets.emit_model`)."""
    promote = dag.task_dict.get("promote")
    if promote is None:
        return
    callbacks = promote.on_success_callback or []
    promote.on_success_callback = [
        *(callbacks if isinstance(callbacks, list) else [callbacks]),
        RunNotifier("promotion"),
    ]
    if MODEL_ALIAS not in promote.outlets:
        promote.outlets = [*promote.outlets, MODEL_ALIAS]
