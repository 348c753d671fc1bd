"""DAG ``dpo_finetune``: validate → stage_dataset → train → evaluate, with cleanup as teardown.

Trigger it with a conf such as ``{"dataset_uri": "gs://bucket/prefs.jsonl", "exp_name": "exp1",
"overrides": {"max_steps": 200}}``. Only wiring lives here: the task bodies are in
``dpo_lib.orchestration``, and neither this file nor they import torch, so parsing stays fast.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from dpo_lib.orchestration.request import DEFAULT_REQUEST, RequestError, request_schema
from dpo_lib.orchestration.runners import command_task
from dpo_lib.orchestration.settings import Settings

DAG_ID = "dpo_finetune"
SCHEMA = request_schema()
SETTINGS = Settings.from_env()


def _param(name: str) -> Param:
    return Param(DEFAULT_REQUEST[name], **SCHEMA["properties"][name])


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    description="DPO fine-tune: validate, stage the dataset, train, evaluate, clean up",
    params={name: _param(name) for name in SCHEMA["properties"]},
    default_args={"retries": 0},
    tags=["dpo"],
    doc_md=__doc__,
):

    @task(retries=2, retry_delay=timedelta(seconds=10))
    def validate() -> dict:
        """Request, training config and dataset; a bad one fails here and is not retried."""
        from dpo_lib.orchestration import tasks

        context = get_current_context()
        try:
            return tasks.validate(dict(context["params"]), dag_id=DAG_ID, run_id=context["run_id"])
        except RequestError as exc:
            raise AirflowFailException(str(exc)) from None

    @task(retries=2, retry_delay=timedelta(seconds=10))
    def stage_dataset(plan: dict) -> dict:
        from dpo_lib.orchestration import tasks

        return tasks.stage(plan)

    @task
    def cleanup(plan: dict) -> None:
        from dpo_lib.orchestration import tasks

        tasks.cleanup(plan)

    plan = validate()
    staged = stage_dataset(plan)
    train = command_task("train", "train_command", SETTINGS, retries=2, retry_delay=timedelta(seconds=30))
    evaluate = command_task("evaluate", "evaluate_command", SETTINGS, retries=1, retry_delay=timedelta(seconds=10))
    staged >> train >> evaluate >> cleanup(plan).as_teardown(setups=staged)
