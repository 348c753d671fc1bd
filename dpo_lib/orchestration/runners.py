"""The runner switch: which operator runs a planned command line (train, evaluate).

Both runners execute the same ``python -m dpo_lib …`` command that ``validate`` planned,
so switching where training runs changes no task code. Airflow is imported here only
when a DAG file builds its tasks.
"""

from __future__ import annotations

from typing import Any

from dpo_lib.orchestration.settings import Settings

RUNNERS = ("local",)


def command_task(task_id: str, plan_key: str, settings: Settings, **operator_kwargs: Any):
    """An operator running ``plan[plan_key]`` (the ``validate`` task's XCom) with ``settings.runner``."""
    command = "{{ ti.xcom_pull(task_ids='validate')['" + plan_key + "'] }}"
    if settings.runner == "local":
        from airflow.providers.standard.operators.bash import BashOperator

        # BashOperator runs the command in its own process group and kills that group on_kill,
        # so a stopped task never leaves a trainer behind.
        return BashOperator(task_id=task_id, bash_command=command, cwd=str(settings.workdir), **operator_kwargs)
    raise ValueError(f"DPO_RUNNER={settings.runner!r} is not a runner; choose one of {', '.join(RUNNERS)}")
