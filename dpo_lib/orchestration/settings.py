"""Deployment settings of the pipeline, from environment variables (all optional)."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]

# Secrets the trainer container may need (gated Hugging Face models, experiment trackers).
# Only these names, and only when set on the worker, reach it (as DockerOperator's private_environment).
DEFAULT_DOCKER_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")


@dataclass(frozen=True)
class DockerSettings:
    """How the docker runner starts the trainer container (``DPO_RUNNER=docker``).

    The staging, artifacts and models folders are mounted at the same absolute paths the
    Airflow worker sees, so the planned command line means the same on both sides. The
    ``*_source`` fields say where the Docker daemon finds them: ``None`` binds the path
    itself (Airflow on the host), a name is a Docker volume (Airflow in a container,
    whose folders are volumes the daemon knows by name), an absolute path is a host folder.
    """

    image: str = "dpo-trainer:latest"
    url: str | None = None  # None: DOCKER_HOST, else the local socket
    gpus: str = "all"  # "all", a count ("2"), or "0"/"none" for a CPU-only container
    shm_size: str = "8g"  # /dev/shm: PyTorch data loader workers share tensors through it
    ulimits: str = ""  # e.g. "memlock=-1,stack=67108864" for NCCL; empty: the daemon's defaults
    user: str | None = None  # None: the image's own non-root user
    network_mode: str | None = None  # None: Docker's default bridge
    mount_tmp_dir: bool = True  # off when Airflow itself runs in a container
    staging_source: str | None = None
    artifacts_source: str | None = None
    models_source: str | None = None
    secrets: tuple[str, ...] = DEFAULT_DOCKER_SECRETS

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DockerSettings:
        env = os.environ if env is None else env
        return cls(
            image=env.get("DPO_DOCKER_IMAGE") or cls.image,
            url=env.get("DPO_DOCKER_URL") or None,
            gpus=env.get("DPO_DOCKER_GPUS") or cls.gpus,
            shm_size=env.get("DPO_DOCKER_SHM_SIZE") or cls.shm_size,
            ulimits=env.get("DPO_DOCKER_ULIMITS", cls.ulimits),
            user=env.get("DPO_DOCKER_USER") or None,
            network_mode=env.get("DPO_DOCKER_NETWORK") or None,
            mount_tmp_dir=_flag(env.get("DPO_DOCKER_MOUNT_TMP_DIR"), default=not running_in_container()),
            staging_source=env.get("DPO_DOCKER_STAGING_SOURCE") or None,
            artifacts_source=env.get("DPO_DOCKER_ARTIFACTS_SOURCE") or None,
            models_source=env.get("DPO_DOCKER_MODELS_SOURCE") or None,
            secrets=_names(env.get("DPO_DOCKER_SECRETS"), default=DEFAULT_DOCKER_SECRETS),
        )


@dataclass(frozen=True)
class Settings:
    workdir: Path  # where the trainer runs; relative paths in configs/ resolve against it
    local_storage_root: Path  # local dataset paths must stay under it
    staging_root: Path  # per-run dataset copies, removed by cleanup
    artifacts_root: Path  # per-run checkpoints, final model, metrics.json
    runner: str  # "local": a subprocess on the worker; "docker": a container (DockerOperator)
    python: str  # the interpreter the local runner starts
    models_dir: Path | None = None  # model directories; None: workdir/models (configs say models/<name>)
    docker: DockerSettings = field(default_factory=DockerSettings)

    @property
    def models_root(self) -> Path:
        return self.models_dir or self.workdir / "models"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        workdir = Path(env.get("DPO_WORKDIR", PROJECT_DIR)).resolve()
        return cls(
            workdir=workdir,
            local_storage_root=Path(env.get("DPO_LOCAL_STORAGE_ROOT", workdir)).resolve(),
            staging_root=Path(env.get("DPO_STAGING_ROOT", workdir / "var" / "staging")).resolve(),
            artifacts_root=Path(env.get("DPO_ARTIFACTS_ROOT", workdir / "artifacts" / "runs")).resolve(),
            runner=env.get("DPO_RUNNER", "local"),
            python=env.get("DPO_PYTHON", sys.executable),
            models_dir=Path(env.get("DPO_MODELS_DIR", workdir / "models")).resolve(),
            docker=DockerSettings.from_env(env),
        )


def path_safe(name: str) -> str:
    """A run id such as ``manual__2026-01-01T00:00:00+00:00`` as one safe path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "_"


def running_in_container() -> bool:
    """Whether this process runs inside a container (Docker and Podman leave these marker files)."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


def _flag(value: str | None, *, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    if value.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if value.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def _names(value: str | None, *, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    return tuple(name.strip() for name in value.split(",") if name.strip())
