"""``dpo_finetune`` with ``DPO_RUNNER=docker``: train and evaluate run in the trainer image, for real.

A whole Airflow (the project's service launcher through ``tests.support.airflow_services``, LocalExecutor,
SQLite) runs the DAG; the train and evaluate tasks start containers of the CPU trainer image
through DockerOperator, with the staging, artifacts and models folders of a temporary work
directory mounted in.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from dpo_lib.api.client import run_metrics
from dpo_lib.orchestration.containers import RUN_LABEL, TASK_LABEL
from dpo_lib.settings import path_safe
from dpo_lib.spec import SPEC_FILE
from tests.faults.airflow_retry import (
    RETRY_ENV,
    assert_same_result,
    check_retry_resumed,
    kill_mid_run,
    trigger,
    uninterrupted_run,
    wait_until,
)
from tests.faults.airflow_retry import describe as describe_tries
from tests.support.airflow_services import RunningServices, make_workdir, running_services, tail
from tests.support.docker_host import containers_with_labels, docker, image_user

pytestmark = pytest.mark.slow
DAG_ID = "dpo_finetune"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, trainer_image):
    root = tmp_path_factory.mktemp("docker-run")
    work = make_workdir(root / "work")
    # The trainer runs as the image's non-root user: the artifacts folder must be theirs to write.
    uid, _, gid = image_user(trainer_image).partition(":")
    (root / "artifacts").mkdir()
    subprocess.run(["chown", f"{uid}:{gid or 0}", str(root / "artifacts")], check=True)
    env = {
        "DPO_RUNNER": "docker",
        "DPO_DOCKER_IMAGE": trainer_image,
        "DPO_DOCKER_GPUS": "none",
        "DPO_DOCKER_SHM_SIZE": "512m",
        "DPO_LOCAL_STORAGE_ROOT": str(work),
        "HF_TOKEN": "hf_not_a_real_token_but_secret",
        **RETRY_ENV,  # a killed train is retried after 1 s, not 30-60
    }
    with running_services(root, work, env) as services:
        yield services


def describe(stack: RunningServices, run_id: str) -> str:
    """Every task's state and log tail, for an assertion message."""
    parts = []
    for ti in stack.api().task_instances(DAG_ID, run_id):
        parts.append(f"== {ti.task_id}: {getattr(ti.state, 'value', ti.state)}")
        if ti.try_number:
            parts.append(stack.api().task_log(DAG_ID, run_id, ti.task_id, ti.try_number)[-3000:])
    return "\n".join(parts) + "\n" + tail(stack.log, 4000)


def test_the_toy_run_trains_and_evaluates_in_containers(stack, trainer_image):
    run = stack.api().trigger(
        DAG_ID, {"dataset_uri": "data/dataset.json", "exp_name": "docker", "overrides": {"max_steps": 40}}
    )
    run_id = run.dag_run_id
    final = stack.api().wait(DAG_ID, run_id, timeout_s=900)
    assert getattr(final.state, "value", final.state) == "success", describe(stack, run_id)

    train_log = stack.api().task_log(DAG_ID, run_id, "train", 1)
    assert f"Starting docker container from image {trainer_image}" in train_log
    spec_path = stack.staging_root / DAG_ID / path_safe(run_id) / SPEC_FILE
    assert f"running `python -m dpo_lib train --spec {spec_path}`" in train_log  # validate's XCom, resolved
    assert "saved the trained policy" in train_log  # the trainer's own log, streamed from the container
    assert "hf_not_a_real_token_but_secret" not in train_log  # passed as a private variable, never logged
    assert "secrets passed: HF_TOKEN" in train_log

    metrics_path = stack.artifacts_root / "docker" / path_safe(run_id) / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    assert metrics["train"]["step"] == 40 and "logps/accuracies" in metrics["eval"]["reference"]
    # Written through the mounted artifacts folder by the container's user, not by this process.
    assert str(metrics_path.stat().st_uid) == image_user(trainer_image).partition(":")[0]
    assert run_metrics(stack.api(), DAG_ID, run_id) == metrics  # evaluate's XCom: its last line, as locally

    assert containers_with_labels(f"{RUN_LABEL}={run_id}") == []  # auto_remove="force"
    assert [p for p in stack.staging_root.rglob("*") if p.is_file()] == []


@pytest.mark.faults
def test_a_killed_trainer_container_is_retried_by_airflow_and_resumes_from_its_newest_checkpoint(stack, tmp_path):
    """SIGKILL from the host to the container's main process, the trainer: what the OOM killer does to it."""
    run_id, run_dir = trigger(stack, "killed-docker")
    labels = (f"{RUN_LABEL}={run_id}", f"{TASK_LABEL}=train")
    wait_until(lambda: containers_with_labels(*labels), 600, lambda: "no train container\n" + describe_tries(stack, run_id),
               interval=0.5)  # fmt: skip
    (container,) = containers_with_labels(*labels)
    pid = int(docker("inspect", "--format", "{{.State.Pid}}", container).stdout)  # as this host numbers it
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"dpo_lib\0train\0--spec\0" in command  # the trainer is the main process, on the run's spec
    assert command.endswith(f"{stack.staging_root / DAG_ID / path_safe(run_id) / SPEC_FILE}\0".encode())
    assert 0 not in process_uids(pid)  # and runs as the image's user, not root

    before, spec = kill_mid_run(stack, run_id, run_dir, lambda spec: os.kill(pid, signal.SIGKILL))
    first, second, resumed_at = check_retry_resumed(stack, run_id, run_dir, before)
    assert "Docker container failed: {'Error': None, 'StatusCode': 137}" in first, first[-3000:]  # 128 + SIGKILL
    assert "Starting docker container" in second
    print(f"killed after step-{before} was checkpointed; the retry resumed at step {resumed_at}")
    assert containers_with_labels(f"{RUN_LABEL}={run_id}") == []

    # The container's torch is the host's version (tests/system/docker/test_images.py), on the same CPU.
    reference = uninterrupted_run(spec, stack, tmp_path / "uninterrupted")
    assert_same_result(run_dir, reference, tolerance=1e-5)


def process_uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of a process (as this host's /proc shows them)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line for process {pid}")


def test_killing_train_leaves_no_container(stack):
    conf = {"dataset_uri": "data/dataset.json", "exp_name": "killed", "overrides": {"max_steps": 1000000}}
    run_id = stack.api().trigger(DAG_ID, conf).dag_run_id
    labels = (f"{RUN_LABEL}={run_id}", f"{TASK_LABEL}=train")

    deadline = time.monotonic() + 600
    while not containers_with_labels(*labels):
        assert time.monotonic() < deadline, "train never started a container\n" + describe(stack, run_id)
        time.sleep(2)

    # What the UI's "mark failed" does: the task's supervisor is told, SIGTERMs it, and on_kill runs.
    set_task_state(stack, run_id, "train", "failed")
    deadline = time.monotonic() + 60
    while containers_with_labels(*labels):
        assert time.monotonic() < deadline, "the killed task's container is still there\n" + describe(stack, run_id)
        time.sleep(1)

    final = stack.api().wait(DAG_ID, run_id, timeout_s=300)
    assert getattr(final.state, "value", final.state) == "failed"
    assert containers_with_labels(f"{RUN_LABEL}={run_id}") == []


def test_a_failing_container_fails_the_try_and_airflow_retries_it(stack):
    # Valid for the config, impossible for a CPU container: the trainer exits non-zero at once.
    conf = {"dataset_uri": "data/dataset.json", "exp_name": "no-gpu", "overrides": {"trainer.device": "cuda"}}
    run_id = stack.api().trigger(DAG_ID, conf).dag_run_id

    deadline = time.monotonic() + 600
    while (train := task_instance(stack, run_id, "train")) is None or (train.try_number or 0) < 2:
        assert time.monotonic() < deadline, "train was not retried\n" + describe(stack, run_id)
        time.sleep(3)
    first_try = stack.api().task_log(DAG_ID, run_id, "train", 1)
    assert "no GPU is visible" in first_try, first_try[-3000:]  # the trainer's own words, from the container
    assert "Docker container failed: {'Error': None, 'StatusCode': 2}" in first_try
    assert "try 1 of 3 failed" in first_try

    patch(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})  # no need to wait for try 3
    stack.api().wait(DAG_ID, run_id, timeout_s=300)
    deadline = time.monotonic() + 60
    while containers_with_labels(f"{RUN_LABEL}={run_id}"):
        assert time.monotonic() < deadline, "a container of the failed run is still there"
        time.sleep(1)


def task_instance(stack: RunningServices, run_id: str, task_id: str):
    return next((ti for ti in stack.api().task_instances(DAG_ID, run_id) if ti.task_id == task_id), None)


def set_task_state(stack: RunningServices, run_id: str, task_id: str, state: str) -> None:
    patch(stack, f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": state})


def patch(stack: RunningServices, path: str, body: dict) -> None:
    request = urllib.request.Request(
        stack.url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.token()}"},
        method="PATCH",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
