"""The trainer image and its operator against a real Docker daemon, outside Airflow: exit codes, kill,
removal, and FSDP over two processes in one container."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from types import SimpleNamespace

import pytest
from airflow.providers.docker.exceptions import DockerContainerFailedException

from dpo_lib.dag.docker_runner import docker_command_task
from dpo_lib.dag.runners import command_args
from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration.containers import RUN_LABEL, remove_stray_containers
from dpo_lib.settings import DockerSettings
from dpo_lib.tiny_model import build_tiny_model
from tests.support.docker_host import containers_with_labels, docker, image_user
from tests.support.settings_under import settings_under

pytestmark = pytest.mark.slow


def operator(tmp_path, image: str, run_id: str, **kwargs):
    settings = settings_under(
        tmp_path,
        runner="docker",
        python="python3",
        docker=DockerSettings(image=image, gpus="none", shm_size="64m", mount_tmp_dir=False),
    )
    op = docker_command_task("train", command_args("train", str(tmp_path / "run_spec.json")), settings, **kwargs)
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


def test_the_trainer_container_runs_fsdp_over_two_processes_without_a_network(tmp_path, trainer_image):
    """``trainer=fsdp trainer.device=cpu trainer.nproc=2``: torchrun and two gloo processes in one container.

    Without a network (``DPO_DOCKER_NETWORK=none``) the container's host name resolves to nothing;
    torchrun's rendezvous is on the loopback address (``dpo_lib/training/torchrun.py``), so FSDP runs all the same.
    """
    job = tmp_path / "job"  # mounted at the same path; the container's user reads it and writes run/
    build_tiny_model(job / "tiny")
    (job / "toy.json").write_text(json.dumps(make_toy_pairs(48, seed=0)))
    (job / "run").mkdir()
    uid = image_user(trainer_image).partition(":")[0]
    subprocess.run(["chown", f"{uid}:0", str(job / "run")], check=True)
    job.chmod(0o755)
    (job / "toy.json").chmod(0o644)
    name = f"fsdp-test-{os.getpid()}"
    args = ["run", "--name", name, "--network", "none", "--shm-size", "256m", "-v", f"{job}:{job}",
            trainer_image, "train", "exp_name=fsdp", f"model.name_or_path={job / 'tiny'}",
            f"datasets.toy.uri={job / 'toy.json'}", f"run_dir={job / 'run'}", "trainer=fsdp", "trainer.device=cpu",
            "trainer.nproc=2", "max_steps=4", "checkpoint_every=2", "batch_size=4", "warmup_steps=0",
            "log_every=1", "eval_every=0"]  # fmt: skip
    try:
        result = docker(*args, timeout=300, check=False)
    finally:
        docker("rm", "--force", name, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert "--nproc_per_node=2" in output  # the launcher's command line
    assert "fsdp: world size 2, backend gloo on cpu" in output
    checkpoint = job / "run" / "checkpoints" / "step-4"
    assert (checkpoint / "COMPLETE").exists()
    assert len(list(checkpoint.glob("*.distcp"))) == 2  # one shard per process
    assert sorted(p.name for p in checkpoint.glob("rng-*.pt")) == ["rng-0.pt", "rng-1.pt"]
    assert json.loads((job / "run" / "metrics.json").read_text())["train"]["step"] == 4
    final = job / "run" / "final" / "model.safetensors"
    assert str(final.stat().st_uid) == uid  # written by the image's non-root user
    assert final.stat().st_mode & 0o044 == 0o044  # and readable by evaluate, whoever runs it


def _run(op, context, errors: list) -> None:
    try:
        op.execute(context)
    except Exception as exc:  # the test asserts that one happened
        errors.append(exc)
