"""Deployment settings: every ``DPO_*`` environment variable the library reads, read here and nowhere else.

Each variable is declared once in :data:`VARIABLES` with its default and meaning (docs/configuration.md
lists them from there), and parsed by the ``from_env`` of the settings it belongs to: :class:`Settings`
(folders, the runner, the DAG's knobs), :class:`DockerSettings` (the trainer container) and
:class:`StorageSettings` (storage timeouts and credentials). A bad value is an error naming the variable.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]

# Secrets the trainer container may need (gated Hugging Face models, experiment trackers).
# Only these names, and only when set on the worker, reach it (as DockerOperator's private_environment).
DEFAULT_DOCKER_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")

VARIABLES: dict[str, tuple[str, str]] = {
    # name: (default, meaning)
    "DPO_WORKDIR": ("the repository", "where tasks and the trainer run; relative paths in configs/ resolve here"),
    "DPO_CONFIG_DIR": ("DPO_WORKDIR/configs", "the config presets (model/, loss/, trainer/, adapter/, datasets/)"),
    "DPO_LOCAL_STORAGE_ROOT": ("DPO_WORKDIR", "local dataset_uri paths must lie under it"),
    "DPO_STAGING_ROOT": ("DPO_WORKDIR/var/staging", "per-run staged inputs and run_spec.json; removed by cleanup"),
    "DPO_ARTIFACTS_ROOT": ("DPO_WORKDIR/artifacts/runs", "per-run checkpoints, final model, metrics.json"),
    "DPO_MODELS_DIR": ("DPO_WORKDIR/models", "model folders (configs say models/<name>)"),
    "DPO_MODEL_CACHE": ("DPO_STAGING_ROOT/.model-cache", "models staged from model_uri: a read-only folder a content"),
    "DPO_RUNNER": ("local", "where train and evaluate run: local (a subprocess) or docker (the trainer image)"),
    "DPO_PYTHON": ("this interpreter", "the Python the local runner starts"),
    "DPO_MAX_ACTIVE_RUNS": ("16", "dpo_finetune runs active at once"),
    "DPO_TRAIN_RETRY_DELAY_S": ("30", "seconds before train's first retry (doubling after)"),
    "DPO_TRAIN_TIMEOUT_H": ("72", "hours one try of train may run before Airflow stops it"),
    "DPO_TASK_TIMEOUT_MIN": ("60", "minutes one try of validate, stage, evaluate or cleanup may run"),
    "DPO_GPU_SLOTS": ("1", "train tasks running at once: the `gpu` pool's slots (the launcher creates it)"),
    "DPO_SERVICES_START_TIMEOUT_S": ("240", "seconds `python -m dpo_lib services` waits for Airflow to be ready"),
    "DPO_HEALTH_TIMEOUT_S": ("3", "seconds each /dpo/health check may take"),
    "DPO_STORAGE_URI": ("unset", "a gs:// or local URI /dpo/health probes (unset: the local storage root)"),
    "DPO_STORAGE_TIMEOUT_S": ("60", "seconds one Firebase Storage request may take"),
    "DPO_STORAGE_RETRY_DEADLINE_S": ("120", "seconds the Firebase client keeps retrying a failing request"),
    "DPO_FIREBASE_CONN_ID": ("unset", "an Airflow Connection holding the Firebase service-account JSON"),
    "DPO_BENCH_DIR": ("a temporary folder", "where `bench` keeps its model config (shared by its processes)"),
    "DPO_NIGHTLY_SCHEDULE": ("0 2 * * *", "dpo_nightly's cron schedule, UTC (or AIRFLOW_VAR_DPO_NIGHTLY_SCHEDULE)"),
    "DPO_NIGHTLY_DATASET_URI": ("data/dataset.json", "dpo_nightly's dataset (or the dpo_nightly_dataset_uri Variable)"),
    "DPO_DOCKER_IMAGE": ("dpo-trainer:latest", "the trainer image"),
    "DPO_DOCKER_URL": ("DOCKER_HOST or the local socket", "the Docker daemon"),
    "DPO_DOCKER_GPUS": ("all", "GPUs per trainer container: all, a count, device=0,1, or none"),
    "DPO_DOCKER_SHM_SIZE": ("8g", "the container's /dev/shm"),
    "DPO_DOCKER_ULIMITS": ("the daemon's", "e.g. memlock=-1,stack=67108864 for NCCL"),
    "DPO_DOCKER_USER": ("the image's non-root user", "user the container runs as"),
    "DPO_DOCKER_NETWORK": ("Docker's bridge", "the container's network (none: no network)"),
    "DPO_DOCKER_MOUNT_TMP_DIR": ("true outside a container", "DockerOperator's mount_tmp_dir"),
    "DPO_DOCKER_STAGING_SOURCE": ("the path itself", "what the daemon mounts at the staging root: a path or volume"),
    "DPO_DOCKER_ARTIFACTS_SOURCE": ("the path itself", "likewise for the artifacts root"),
    "DPO_DOCKER_MODELS_SOURCE": ("the path itself", "likewise for the models folder"),
    "DPO_DOCKER_SECRETS": (",".join(DEFAULT_DOCKER_SECRETS), "variables passed to the container, if set"),
}


class SettingsError(ValueError):
    """An environment variable with a value the pipeline cannot use; the message names it."""


@dataclass(frozen=True)
class DockerSettings:
    """How the docker runner starts the trainer container (``DPO_RUNNER=docker``).

    The staging, artifacts and models folders are mounted at the same absolute paths the
    Airflow worker sees, so every path in a run spec means the same on both sides. The
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
            mount_tmp_dir=_flag(env, "DPO_DOCKER_MOUNT_TMP_DIR", default=not running_in_container()),
            staging_source=env.get("DPO_DOCKER_STAGING_SOURCE") or None,
            artifacts_source=env.get("DPO_DOCKER_ARTIFACTS_SOURCE") or None,
            models_source=env.get("DPO_DOCKER_MODELS_SOURCE") or None,
            secrets=_names(env.get("DPO_DOCKER_SECRETS"), default=DEFAULT_DOCKER_SECRETS),
        )


@dataclass(frozen=True)
class StorageSettings:
    """Storage backends: where local paths may point, and how long Firebase requests may take."""

    local_root: Path
    timeout_s: float = 60.0
    retry_deadline_s: float = 120.0
    firebase_conn_id: str | None = None
    health_uri: str | None = None  # what /dpo/health probes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StorageSettings:
        env = os.environ if env is None else env
        workdir = _workdir(env)
        return cls(
            local_root=Path(env.get("DPO_LOCAL_STORAGE_ROOT") or workdir).resolve(),
            timeout_s=_seconds(env, "DPO_STORAGE_TIMEOUT_S", cls.timeout_s),
            retry_deadline_s=_seconds(env, "DPO_STORAGE_RETRY_DEADLINE_S", cls.retry_deadline_s),
            firebase_conn_id=env.get("DPO_FIREBASE_CONN_ID") or None,
            health_uri=env.get("DPO_STORAGE_URI") or None,
        )


@dataclass(frozen=True)
class Settings:
    """Where a deployment keeps its files, where training runs, and the DAG's operating knobs."""

    workdir: Path  # where the trainer runs; relative paths in configs/ resolve against it
    local_storage_root: Path  # local dataset paths must stay under it
    staging_root: Path  # per-run staged inputs, removed by cleanup
    artifacts_root: Path  # per-run checkpoints, final model, metrics.json
    runner: str = "local"  # "local": a subprocess on the worker; "docker": a container (DockerOperator)
    python: str = sys.executable  # the interpreter the local runner starts
    models_dir: Path | None = None  # model directories; None: workdir/models (configs say models/<name>)
    model_cache_dir: Path | None = None  # staged models by content; None: staging_root/.model-cache
    config_dir: Path = PROJECT_DIR / "configs"
    max_active_runs: int = 16
    train_retry_delay_s: float = 30.0
    train_timeout_h: float = 72.0
    task_timeout_min: float = 60.0
    gpu_slots: int = 1
    services_start_timeout_s: float = 240.0
    health_timeout_s: float = 3.0
    bench_dir: Path | None = None
    docker: DockerSettings = field(default_factory=DockerSettings)

    @property
    def models_root(self) -> Path:
        return self.models_dir or self.workdir / "models"

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.staging_root / ".model-cache"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        workdir = _workdir(env)
        bench_dir = env.get("DPO_BENCH_DIR")
        staging_root = _path(env, "DPO_STAGING_ROOT", workdir / "var" / "staging")
        return cls(
            workdir=workdir,
            local_storage_root=StorageSettings.from_env(env).local_root,
            staging_root=staging_root,
            model_cache_dir=_path(env, "DPO_MODEL_CACHE", staging_root / ".model-cache"),
            artifacts_root=_path(env, "DPO_ARTIFACTS_ROOT", workdir / "artifacts" / "runs"),
            runner=_choice(env, "DPO_RUNNER", "local", ("local", "docker")),
            python=env.get("DPO_PYTHON") or sys.executable,
            models_dir=_path(env, "DPO_MODELS_DIR", workdir / "models"),
            config_dir=_path(env, "DPO_CONFIG_DIR", PROJECT_DIR / "configs"),
            max_active_runs=_count(env, "DPO_MAX_ACTIVE_RUNS", cls.max_active_runs),
            train_retry_delay_s=_seconds(env, "DPO_TRAIN_RETRY_DELAY_S", cls.train_retry_delay_s),
            train_timeout_h=_positive(env, "DPO_TRAIN_TIMEOUT_H", cls.train_timeout_h),
            task_timeout_min=_positive(env, "DPO_TASK_TIMEOUT_MIN", cls.task_timeout_min),
            gpu_slots=_count(env, "DPO_GPU_SLOTS", cls.gpu_slots),
            services_start_timeout_s=_positive(env, "DPO_SERVICES_START_TIMEOUT_S", cls.services_start_timeout_s),
            health_timeout_s=_positive(env, "DPO_HEALTH_TIMEOUT_S", cls.health_timeout_s),
            bench_dir=Path(bench_dir) if bench_dir else None,
            docker=DockerSettings.from_env(env),
        )


@dataclass(frozen=True)
class NightlySettings:
    """What ``dpo_nightly`` runs, read from the environment when its DAG file is parsed (no database).

    Airflow's own environment form of a Variable (``AIRFLOW_VAR_<NAME>``) counts as well.
    """

    schedule: str = "0 2 * * *"
    dataset_uri: str = "data/dataset.json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NightlySettings:
        env = os.environ if env is None else env
        return cls(
            schedule=env.get("DPO_NIGHTLY_SCHEDULE") or env.get("AIRFLOW_VAR_DPO_NIGHTLY_SCHEDULE") or cls.schedule,
            dataset_uri=env.get("DPO_NIGHTLY_DATASET_URI")
            or env.get("AIRFLOW_VAR_DPO_NIGHTLY_DATASET_URI")
            or cls.dataset_uri,
        )


def config_dir(env: Mapping[str, str] | None = None) -> Path:
    """``DPO_CONFIG_DIR``: the folder of config presets."""
    return _path(os.environ if env is None else env, "DPO_CONFIG_DIR", PROJECT_DIR / "configs")


def path_safe(name: str) -> str:
    """A run id such as ``manual__2026-01-01T00:00:00+00:00`` as one safe path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "_"


def running_in_container() -> bool:
    """Whether this process runs inside a container (Docker and Podman leave these marker files)."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


# ---- parsing, each error naming its variable -----------------------------------------------------


def _workdir(env: Mapping[str, str]) -> Path:
    return Path(env.get("DPO_WORKDIR") or PROJECT_DIR).resolve()


def _path(env: Mapping[str, str], name: str, default: Path) -> Path:
    return Path(env.get(name) or default).resolve()


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise SettingsError(f"{name}={raw!r} is not a number")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if value < 0:
        raise SettingsError(f"{name}={env.get(name)!r} is not a number of seconds (0 or more)")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _number(env, name, default)
    if value <= 0:
        raise SettingsError(f"{name}={env.get(name)!r} must be greater than 0")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    value = _number(env, name, default)
    if value != int(value) or value < 1:
        raise SettingsError(f"{name}={env.get(name)!r} must be a whole number, at least 1")
    return int(value)


def _flag(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = (env.get(name) or "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={env.get(name)!r} is not a boolean (use true or false)")


def _names(value: str | None, *, default: tuple[str, ...]) -> tuple[str, ...]:
    if value is None:
        return default
    return tuple(name.strip() for name in value.split(",") if name.strip())
