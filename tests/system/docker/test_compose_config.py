"""docker-compose.yaml is valid (``docker-compose config``, Debian's docker-compose) and keeps its promises."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import yaml

from dpo_lib.airflow_local import services
from tests.conftest import REPO
from tests.support.host import require_commands

SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
           "AIRFLOW_FERNET_KEY")  # fmt: skip
AIRFLOW_SERVICES = ("airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")


def compose_config(
    *options: str, config_args: tuple[str, ...] = (), secrets: bool = True
) -> subprocess.CompletedProcess:
    require_commands("docker-compose")
    # Only this file's variables: none from the caller's shell (nor a developer's .env).
    env = {key: value for key, value in os.environ.items() if not re.match(r"^(AIRFLOW|DPO|DOCKER|COMPOSE)_", key)}
    if secrets:
        env.update({name: f"test-{name.lower()}" for name in SECRETS})
    return subprocess.run(
        ["docker-compose", "--project-directory", str(REPO), "-f", str(REPO / "docker-compose.yaml"),
         "--env-file", str(REPO / ".env.example"), *options, "config"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


needs_compose = pytest.mark.slow  # Debian's docker-compose, from tests/provision-host.sh


@pytest.fixture(scope="module")
def config() -> dict:
    result = compose_config("--profile", "celery")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@needs_compose
def test_the_compose_file_is_valid_with_and_without_the_celery_profile(config):
    assert set(config["services"]) == {
        "postgres", "redis", "airflow-init", *AIRFLOW_SERVICES, "airflow-worker", "trainer",
    }  # fmt: skip
    profiled = {name for name, service in config["services"].items() if service.get("profiles")}
    assert profiled == {"redis", "airflow-worker"}
    assert config["services"]["redis"]["profiles"] == ["celery"]
    assert compose_config().returncode == 0  # and without the profile


@needs_compose
def test_tasks_outlast_an_api_server_restart_as_long_as_under_the_launcher(config):
    launcher = services.TUNABLE_DEFAULTS["AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS"]
    for name in ("airflow-scheduler", "airflow-worker"):  # where tasks and their heartbeats run
        assert config["services"][name]["environment"]["AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS"] == launcher, name


@needs_compose
def test_a_missing_secret_is_refused_naming_it():
    result = compose_config(secrets=False)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "AIRFLOW_" in result.stderr


@needs_compose
def test_only_the_services_that_run_tasks_get_the_docker_socket(config):
    with_socket = {
        name for name, service in config["services"].items()
        if any("docker.sock" in str(volume) for volume in service.get("volumes", []))
    }  # fmt: skip
    assert with_socket == {"airflow-scheduler", "airflow-worker"}
    for name in with_socket:
        assert config["services"][name]["group_add"], "the socket's group, not root"
        assert config["services"][name]["user"] == "50000:0"


@needs_compose
def test_long_running_services_have_healthchecks_and_wait_for_the_init(config):
    services = config["services"]
    for name in ("postgres", "redis", *AIRFLOW_SERVICES, "airflow-worker"):
        assert "test" in services[name].get("healthcheck", {}), name
    for name in (*AIRFLOW_SERVICES, "airflow-worker"):
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"


@needs_compose
def test_airflow_runs_train_in_trainer_containers_on_the_shared_volumes(config):
    volumes = config["volumes"]
    scheduler = config["services"]["airflow-scheduler"]
    env = scheduler["environment"]
    assert env["DPO_RUNNER"] == "docker" and env["DPO_DOCKER_MOUNT_TMP_DIR"] == "false"
    assert env["DPO_DOCKER_IMAGE"] == config["services"]["trainer"]["image"]
    mounted = {str(v["target"] if isinstance(v, dict) else v.split(":")[1]): v for v in scheduler["volumes"]}
    for root, source, volume in (
        ("DPO_STAGING_ROOT", "DPO_DOCKER_STAGING_SOURCE", "staging"),
        ("DPO_ARTIFACTS_ROOT", "DPO_DOCKER_ARTIFACTS_SOURCE", "artifacts"),
        ("DPO_MODELS_DIR", "DPO_DOCKER_MODELS_SOURCE", "models"),
    ):
        assert env[root] in mounted, f"{root} is a mounted volume"
        assert env[source] == volumes[volume]["name"], "the trainer mounts the very same volume"


def test_every_variable_of_the_compose_file_is_documented_in_env_example():
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", (REPO / "docker-compose.yaml").read_text()))
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.M))
    assert used - documented == set()
