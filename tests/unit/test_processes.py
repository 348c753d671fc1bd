"""A command the local runner starts dies with the task process that started it.

Airflow's BashOperator starts the command in a session of its own, so when the task process dies without
stopping it (its supervisor killed with the scheduler) nothing else stops it; ``DPO_EXIT_WITH_PARENT``, which
the local runner sets, makes ``python -m dpo_lib`` ask the kernel for SIGTERM when its parent dies.
(End to end, with a real scheduler killed: ``tests/faults/test_service_faults.py``.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from dpo_lib.dag.runners import spec_command_task
from dpo_lib.processes import EXIT_WITH_PARENT_ENV
from tests.faults.processes import is_alive, wait_for
from tests.support.settings_under import settings_under

SLEEPER = """
def add_arguments(parser):
    pass


def run(args):
    import time

    time.sleep(120)
"""


def start_task_process(tmp_path, exit_with_parent: bool) -> tuple[subprocess.Popen, int]:
    """A stand-in for Airflow's task process: starts ``python -m dpo_lib sleep`` as SubprocessHook does (bash
    exec'ing the command, in a new session); returns it and the command's pid."""
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    command = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from dpo_lib import cli
        cli.COMMANDS["sleep"] = ("sleeper", "sleep two minutes")
        sys.exit(cli.main(["sleep"]))
    """)
    env = {key: value for key, value in os.environ.items() if key != EXIT_WITH_PARENT_ENV}
    if exit_with_parent:
        env[EXIT_WITH_PARENT_ENV] = "1"
    task = textwrap.dedent(f"""
        import subprocess, time
        child = subprocess.Popen(["bash", "-c", 'exec "$0" -c "$1"', {sys.executable!r}, {command!r}],
                                 start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", task], stdout=subprocess.PIPE, text=True, env=env)
    return proc, int(proc.stdout.readline())


@pytest.mark.parametrize("exit_with_parent", [True, False])
def test_a_command_started_for_a_task_dies_with_the_task_process(tmp_path, exit_with_parent):
    task, command = start_task_process(tmp_path, exit_with_parent)
    try:
        time.sleep(1.0)  # the command is running (and has asked for its parent-death signal)
        assert is_alive(command)
        task.kill()
        task.wait(timeout=10)
        gone = wait_for(lambda: not is_alive(command), timeout=10 if exit_with_parent else 3, interval=0.05)
        assert gone is exit_with_parent  # without the variable the command outlives its task: the bug it fixes
    finally:
        if is_alive(command):
            os.kill(command, signal.SIGKILL)


def test_the_local_runner_sets_it_for_the_commands_it_runs(tmp_path):
    from airflow.sdk import DAG

    with DAG("processes_test", schedule=None):
        operator = spec_command_task("train", str(tmp_path / "run_spec.json"), settings_under(tmp_path)).operator
    assert operator.env == {EXIT_WITH_PARENT_ENV: "1"} and operator.append_env is True
