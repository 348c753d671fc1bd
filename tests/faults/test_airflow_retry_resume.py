"""The train process of a run in flight killed with SIGKILL, end to end through Airflow (local runner).

A whole Airflow (the project's service launcher, LocalExecutor, SQLite) runs ``dpo_finetune``; the
trainer is the ``python -m dpo_lib train`` process the ``train`` task's BashOperator started. Killing
it fails the try, Airflow retries the task (after 1 s here: ``DPO_TRAIN_RETRY_DELAY_S``), and the retry
resumes from the newest checkpoint: the run succeeds with the weights and metrics of a run never killed.
The docker runner's version of this test is in ``tests/system/docker/test_docker_runner_run.py``.
"""

from __future__ import annotations

import re

import pytest

from dpo_lib.settings import path_safe
from dpo_lib.spec import SPEC_FILE, RunSpec
from tests.faults.airflow_retry import (
    RETRY_ENV,
    assert_same_result,
    check_retry_resumed,
    kill_mid_run,
    trigger,
    uninterrupted_run,
)
from tests.faults.processes import kill_all, trainers_of, wait_for
from tests.support.airflow_services import make_workdir, running_services

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("retry-local")
    work = make_workdir(root / "work")
    with running_services(root, work, {**RETRY_ENV, "DPO_RUNNER": "local"}) as running:
        yield running


def test_a_killed_train_task_is_retried_by_airflow_and_resumes_from_its_newest_checkpoint(services, tmp_path):
    run_id, run_dir = trigger(services, "killed-local")

    spec_path = services.staging_root / "dpo_finetune" / path_safe(run_id) / SPEC_FILE  # `train --spec` names it

    def kill(spec: RunSpec) -> None:
        trainers = trainers_of(spec.path)
        assert len(trainers) == 1, trainers
        kill_all(trainers)
        assert wait_for(lambda: not trainers_of(spec.path), 30)

    try:
        before, spec = kill_mid_run(services, run_id, run_dir, kill)
        first, _, resumed_at = check_retry_resumed(services, run_id, run_dir, before)
    finally:
        kill_all(trainers_of(spec_path))
    # Try 1 ended by the kill: the command's exit status is the signal's (bash: 128 + 9; Python: -9).
    ended = re.search(r"Bash command failed\. The command returned a non-zero exit code (-9|137)\b", first)
    assert ended, first[-3000:]
    print(f"killed after step-{before} was checkpointed ({ended.group(0)}); the retry resumed at step {resumed_at}")

    reference = uninterrupted_run(spec, services, tmp_path / "uninterrupted")
    assert_same_result(run_dir, reference, tolerance=1e-5)  # the same computation on the same CPU
