"""The docker runner: train and evaluate in the trainer image, started by Airflow's DockerOperator.

The container runs the same arguments the local runner gives ``python -u -m dpo_lib``
(``train --spec PATH``), after the image's entrypoint ``python -m dpo_lib``. Paths need no
translation: the staging, artifacts and models folders are mounted at the absolute paths the
Airflow worker sees (staging and models read-only, artifacts read-write) and the container starts
in ``DPO_WORKDIR``, so every path in the run spec, and the configs' relative ``models/<name>``,
mean the same file on both sides.

Imported only when a DAG builds its tasks with ``DPO_RUNNER=docker``: it loads the Docker provider.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator
from docker.errors import APIError
from docker.types import DeviceRequest, Mount, Ulimit

from dpo_lib.orchestration.containers import container_labels
from dpo_lib.settings import DockerSettings, Settings


class TrainerContainerOperator(DockerOperator):
    """DockerOperator for the trainer image, with what a GPU training task adds to it.

    * Labels naming the DAG, run, task and try are set when the task runs (``labels`` is
      not a template field), so a teardown can find a container a killed task left behind.
    * Secrets are read from the worker's environment when the task runs and passed only as
      ``private_environment``: never templated, serialized, or shown in the UI.
    * ``on_kill`` removes the container at once (see :meth:`on_kill`).
    """

    def __init__(self, *, secret_names: Sequence[str] = (), bind_dirs: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.secret_names = tuple(secret_names)
        self.bind_dirs = tuple(bind_dirs)

    def prepare_container(self, ti: Any, environ: Mapping[str, str] | None = None) -> None:
        """Labels for this try, secrets from the worker's environment, and the bind-mounted folders."""
        self.labels = container_labels(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=ti.try_number)
        self._private_environment = secret_environment(self.secret_names, os.environ if environ is None else environ)
        for folder in self.bind_dirs:  # a bind mount of a missing folder is refused by Docker
            Path(folder).mkdir(parents=True, exist_ok=True)

    def execute(self, context: Any) -> Any:
        self.prepare_container(context["ti"])
        command = self.format_command(self.command)
        self.log.info(
            "running `python -m dpo_lib %s` in a container of %s (secrets passed: %s)",
            shlex.join(command) if isinstance(command, list) else command, self.image,
            ", ".join(sorted(self._private_environment)) or "none",
        )  # fmt: skip
        return super().execute(context)

    def on_kill(self) -> None:
        """Remove the container now, killing the trainer.

        DockerOperator's own ``on_kill`` first stops the container politely, which waits up to
        ten seconds, but Airflow's task supervisor SIGKILLs this process five seconds after its
        SIGTERM, so the removal may never come. Training loses nothing it cannot redo:
        checkpoints are written atomically and a retry resumes from the newest one. Killed before
        Docker answered the create call, it finds the container by this try's labels.
        """
        if self.container is not None:
            ids = [self.container["Id"]]
        else:  # killed while Docker was creating it: find this try's container by its labels
            labels = [f"{key}={value}" for key, value in (self.labels or {}).items()]
            ids = [c["Id"] for c in self.cli.containers(all=True, filters={"label": labels})] if labels else []
        if not ids:
            self.log.info("no container was started; nothing to remove")
        for container_id in ids:
            try:
                self.cli.remove_container(container_id, force=True)
                self.log.info("removed container %s", container_id[:12])
            except APIError as exc:
                self.log.info("container %s is already gone: %s", container_id[:12], exc)


def docker_command_task(task_id: str, command: list[Any], settings: Settings, **operator_kwargs: Any) -> DockerOperator:
    """A :class:`TrainerContainerOperator` running ``command`` (after the entrypoint) in ``settings.docker.image``.

    ``command`` may hold XComArgs (the run spec's path): Airflow resolves them when the task runs.
    """
    docker = settings.docker
    mounts, bind_dirs = trainer_mounts(settings)
    options: dict[str, Any] = {
        "image": docker.image,
        "command": command,
        "docker_url": docker.url,
        "mounts": mounts,
        "working_dir": str(settings.workdir),
        "device_requests": device_requests(docker.gpus),
        "shm_size": shm_bytes(docker.shm_size),
        "ulimits": ulimits(docker.ulimits),
        "user": docker.user,
        "network_mode": docker.network_mode,
        "environment": trainer_environment(settings, os.environ),
        "auto_remove": "force",
        "mount_tmp_dir": docker.mount_tmp_dir,
        "secret_names": docker.secrets,
        "bind_dirs": bind_dirs,
        # Only the last output line is pushed (xcom_all=False): the one-line JSON summary both
        # commands end with (evaluate's is metrics.json), as with the local runner.
        "xcom_all": False,
    }
    return TrainerContainerOperator(task_id=task_id, **{**options, **operator_kwargs})


def trainer_environment(settings: Settings, environ: Mapping[str, str]) -> dict[str, str]:
    """What the container needs to find the run's MLflow store as the worker does: the artifacts root
    (mounted at the same path) for the embedded default, or ``MLFLOW_TRACKING_URI`` when one is set."""
    env = {"PYTHONUNBUFFERED": "1", "DPO_ARTIFACTS_ROOT": str(settings.artifacts_root)}
    if uri := environ.get("MLFLOW_TRACKING_URI"):
        env["MLFLOW_TRACKING_URI"] = uri
    return env


def trainer_mounts(settings: Settings) -> tuple[list[Mount], list[str]]:
    """The staging (read-only), artifacts (read-write) and models (read-only) mounts, each at its own path.

    Also returns the folders that are bind-mounted from this machine, which must exist first.
    """
    docker: DockerSettings = settings.docker
    mounts, bind_dirs = [], []
    for target, source, read_only in (
        (settings.staging_root, docker.staging_source, True),
        (settings.artifacts_root, docker.artifacts_source, False),
        (settings.models_root, docker.models_source, True),
    ):
        source = source or str(target)
        kind = "bind" if source.startswith("/") else "volume"
        if kind == "bind" and source == str(target):
            bind_dirs.append(source)
        mounts.append(Mount(target=str(target), source=source, type=kind, read_only=read_only))
    return mounts, bind_dirs


def device_requests(gpus: str) -> list[DeviceRequest] | None:
    """GPUs for the container, like ``docker run --gpus``: ``all``, a count, ``device=0,1``, or ``0``/``none``."""
    value = gpus.strip().lower()
    if value in ("", "0", "none"):
        return None
    if value == "all":
        return [DeviceRequest(count=-1, capabilities=[["gpu"]])]
    if value.startswith("device="):
        ids = [i.strip() for i in value.removeprefix("device=").split(",") if i.strip()]
        return [DeviceRequest(device_ids=ids, capabilities=[["gpu"]])]
    if value.isdigit():
        return [DeviceRequest(count=int(value), capabilities=[["gpu"]])]
    raise ValueError(f"DPO_DOCKER_GPUS={gpus!r}: use all, a count, device=ID[,ID...], or none")


def shm_bytes(size: str) -> int:
    """``8g`` as bytes: DockerOperator documents ``shm_size`` in bytes."""
    from docker.utils import parse_bytes

    try:
        value = int(parse_bytes(size.strip()))
    except Exception:  # docker raises its own errors for a malformed size
        raise ValueError(f"DPO_DOCKER_SHM_SIZE={size!r} is not a size such as 8g or 512m") from None
    if value <= 0:
        raise ValueError(f"DPO_DOCKER_SHM_SIZE={size!r} must be greater than zero")
    return value


def ulimits(spec: str) -> list[Ulimit]:
    """``memlock=-1,stack=67108864`` (or ``name=soft:hard``) as Docker ulimits; empty: the daemon's defaults.

    Multi-GPU training over NCCL (FSDP through torchrun, InfiniBand) wants unlimited locked
    memory and a large stack, as NVIDIA's PyTorch containers document; raising them needs a
    daemon allowed to (CAP_SYS_RESOURCE), so they are opt-in (``DPO_DOCKER_ULIMITS``).
    """
    limits = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, values = item.partition("=")
        soft, _, hard = values.partition(":")
        try:
            limits.append(Ulimit(name=name.strip(), soft=int(soft), hard=int(hard or soft)))
        except ValueError:
            raise ValueError(f"DPO_DOCKER_ULIMITS: {item!r} is not name=soft[:hard] with integer limits") from None
    return limits


def secret_environment(names: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """The named secrets that are set (and not empty) in ``environ``; nothing else."""
    return {name: environ[name] for name in names if environ.get(name)}
