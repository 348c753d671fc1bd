"""The runner switch: which operator runs a planned command line (train, evaluate).

Every runner executes the same ``python -m dpo_lib …`` arguments that ``validate`` planned,
so switching where training runs changes no task code. ``local`` (``make demo``, tests)
runs them in a subprocess on the worker; ``docker`` (the compose deployment) in the
trainer image through DockerOperator (see ``docker_runner``). Airflow is imported here
only when a DAG file builds its tasks.
"""

from __future__ import annotations

from typing import Any

from dpo_lib.cli import EXIT_WITH_PARENT_ENV
from dpo_lib.orchestration.settings import Settings

RUNNERS = ("local", "docker")


def command_task(task_id: str, plan_key: str, settings: Settings, **operator_kwargs: Any):
    """An operator running ``plan[plan_key]`` (the ``validate`` task's XCom) with ``settings.runner``.

    ``plan_key`` names the local command line (``train_command``); the docker runner runs the
    matching argument list (``train_args``) after the image's ``python -m dpo_lib`` entrypoint.
    """
    if settings.runner == "local":
        from airflow.providers.standard.operators.bash import BashOperator

        command = "{{ ti.xcom_pull(task_ids='validate')['" + plan_key + "'] }}"
        # BashOperator runs the command in its own process group and kills that group on_kill,
        # so a stopped task never leaves a trainer behind. A task process that dies without
        # stopping it (its supervisor killed with the scheduler) is covered by EXIT_WITH_PARENT:
        # bash execs the single command, so the trainer's parent is the task process itself.
        return BashOperator(
            task_id=task_id,
            bash_command=command,
            cwd=str(settings.workdir),
            env={EXIT_WITH_PARENT_ENV: "1"},
            append_env=True,
            **operator_kwargs,
        )
    if settings.runner == "docker":
        from dpo_lib.orchestration.docker_runner import docker_command_task

        return docker_command_task(task_id, args_key(plan_key), settings, **operator_kwargs)
    raise ValueError(f"DPO_RUNNER={settings.runner!r} is not a runner; choose one of {', '.join(RUNNERS)}")


def args_key(plan_key: str) -> str:
    """The plan's argument list behind a command line: ``train_command`` -> ``train_args``."""
    stem, _, suffix = plan_key.rpartition("_")
    if suffix == "args":
        return plan_key
    if suffix != "command" or not stem:
        raise ValueError(f"{plan_key!r} is not a plan command key (such as train_command)")
    return f"{stem}_args"
