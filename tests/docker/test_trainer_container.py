"""The trainer operator against a real Docker daemon, outside Airflow: exit codes, kill, removal."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from airflow.providers.docker.exceptions import DockerContainerFailedException

from dpo_lib.orchestration.containers import RUN_LABEL, remove_stray_containers
from dpo_lib.orchestration.runners import command_task
from dpo_lib.orchestration.settings import DockerSettings
from tests.docker.docker_host import containers_with_labels, docker
from tests.settings_under import settings_under

pytestmark = pytest.mark.slow


def operator(tmp_path, image: str, run_id: str, **kwargs):
    settings = settings_under(
        tmp_path,
        runner="docker",
        python="python3",
        docker=DockerSettings(image=image, gpus="none", shm_size="64m", mount_tmp_dir=False),
    )
    op = command_task("train", "train_command", settings, **kwargs)
    context = {"ti": SimpleNamespace(dag_id="container-test", run_id=run_id, task_id="train", try_number=1)}
    return op, context


def test_a_non_zero_exit_fails_and_leaves_no_container(tmp_path, trainer_image):
    op, context = operator(tmp_path, trainer_image, "exit-code")
    op.command = ["evaluate", "--run-dir", str(tmp_path / "artifacts" / "no-such-run")]  # exits 2
    with pytest.raises(DockerContainerFailedException, match="'StatusCode': 2"):
        op.execute(context)
    assert containers_with_labels(f"{RUN_LABEL}=exit-code") == []


def test_on_kill_removes_a_running_container_within_the_supervisors_grace(tmp_path, trainer_image):
    op, context = operator(tmp_path, trainer_image, "on-kill", entrypoint=["sleep", "600"])
    op.command = None
    errors = []
    thread = threading.Thread(target=lambda: _run(op, context, errors), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not containers_with_labels(f"{RUN_LABEL}=on-kill"):
        assert time.monotonic() < deadline and thread.is_alive(), f"no container started: {errors}"
        time.sleep(0.5)

    started = time.monotonic()
    op.on_kill()
    assert containers_with_labels(f"{RUN_LABEL}=on-kill") == []
    assert time.monotonic() - started < 5  # Airflow SIGKILLs the task 5 s after its SIGTERM
    thread.join(timeout=30)
    assert errors, "execute must fail once its container is gone"


def test_the_teardown_removes_a_container_left_behind(tmp_path, trainer_image):
    docker("run", "--detach", "--label", "io.dpo-pipeline.dag-id=stray-test", "--label",
           f"{RUN_LABEL}=stray-run", "--entrypoint", "sleep", trainer_image, "600")  # fmt: skip
    assert len(remove_stray_containers("stray-test", "stray-run")) == 1
    assert containers_with_labels(f"{RUN_LABEL}=stray-run") == []
    assert remove_stray_containers("stray-test", "stray-run") == []


def _run(op, context, errors: list) -> None:
    try:
        op.execute(context)
    except Exception as exc:  # the test asserts that one happened
        errors.append(exc)
