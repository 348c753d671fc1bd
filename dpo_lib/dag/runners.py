"""The runner switch: which operator runs ``python -m dpo_lib train|evaluate|compare --spec PATH``.

Both runners execute the same command on the run spec ``validate`` wrote, so switching where
training runs changes no task code. ``local`` (``make demo``, tests) runs it in a subprocess on
the worker; ``docker`` (the compose deployment) in the trainer image through DockerOperator
(see :mod:`~dpo_lib.dag.docker_runner`).
"""

from __future__ import annotations

import shlex
from typing import Any

from airflow.sdk import task

from dpo_lib.processes import EXIT_WITH_PARENT_ENV
from dpo_lib.settings import Settings


def command_args(command: str, spec_path: str) -> list[str]:
    """The arguments after ``python -m dpo_lib`` (the trainer image's entrypoint)."""
    return [command, "--spec", spec_path]


def local_command(python: str, args: list[str]) -> str:
    """``python -u -m dpo_lib ARGS`` as one shell-quoted line (what the local runner executes)."""
    return shlex.join([python, "-u", "-m", "dpo_lib", *args])


def spec_command_task(command: str, spec_path: Any, settings: Settings, **operator_kwargs: Any) -> Any:
    """A task running ``python -m dpo_lib <command> --spec <spec_path>`` with ``settings.runner``.

    ``spec_path`` is the ``validate`` task's result (an XComArg); the task's own result is the
    command's last output line (both commands end with a one-line JSON summary).
    """
    if settings.runner == "docker":
        from dpo_lib.dag.docker_runner import docker_command_task

        return docker_command_task(command, command_args(command, spec_path), settings, **operator_kwargs).output

    # BashOperator runs the command in its own process group and kills that group on_kill, so a
    # stopped task never leaves a trainer behind. A task process that dies without stopping it
    # (its supervisor killed with the scheduler) is covered by EXIT_WITH_PARENT: bash execs the
    # single command, so the trainer's parent is the task process itself.
    @task.bash(task_id=command, cwd=str(settings.workdir), env={EXIT_WITH_PARENT_ENV: "1"}, append_env=True,
               **operator_kwargs)  # fmt: skip
    def run_command(spec_path: str) -> str:
        return local_command(settings.python, command_args(command, spec_path))

    return run_command(spec_path)
