"""The local Airflow launcher on its own: AIRFLOW_HOME's secrets, the services' environment, supervision."""

from __future__ import annotations

import json
import stat
import sys

import pytest

from dpo_lib.airflow_local import services
from dpo_lib.airflow_local.home import AirflowHome


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_generated_once_kept_and_private(tmp_path):
    home = AirflowHome(tmp_path)
    first = home.secrets()
    assert first == home.secrets()
    assert len(first["jwt_secret"]) >= 32 and first["jwt_secret"] != first["api_secret_key"]
    assert mode(home.secrets_file) == 0o600


def test_admin_password_explicit_wins_else_generated_once_and_kept(tmp_path):
    home = AirflowHome(tmp_path)
    generated = home.write_admin("alice", None)
    assert generated.generated and len(generated.password) >= 12
    assert home.write_admin("alice", None) == type(generated)("alice", generated.password, False)
    assert home.write_admin("alice", "s3cret").password == "s3cret"
    assert json.loads(home.passwords_file.read_text()) == {"alice": "s3cret"}
    assert mode(home.passwords_file) == 0o600
    assert home.stored_password("alice") == "s3cret"


def test_config_defaults_to_a_project_local_home_on_port_8080(monkeypatch):
    config = services.ServiceConfig.from_env({})
    assert config.home.name == ".airflow" and config.port == 8080 and config.gpu_slots == 1
    assert config.admin_user == "admin" and config.admin_password is None
    assert config.local_url == "http://127.0.0.1:8080" and config.base_url == "http://localhost:8080"
    with pytest.raises(services.ServicesError, match="AIRFLOW_PORT"):
        services.ServiceConfig.from_env({"AIRFLOW_PORT": "eighty"})
    with pytest.raises(services.ServicesError, match="DPO_GPU_SLOTS"):
        services.ServiceConfig.from_env({"DPO_GPU_SLOTS": "0"})


def test_every_component_gets_the_same_secret_the_port_and_unpaused_dags(tmp_path):
    config = services.ServiceConfig.from_env({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW_PORT": "9123"})
    secrets = {"jwt_secret": "j" * 40, "api_secret_key": "k" * 40}
    env = services.airflow_env(config, secrets, base={"AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "KEEP": "1"})
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "j" * 40
    assert env["AIRFLOW__API__SECRET_KEY"] == "k" * 40
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:9123/execution/"
    assert env["AIRFLOW__API__BASE_URL"] == "http://localhost:9123"
    assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(
        tmp_path / "simple_auth_manager_passwords.json"
    )
    assert env["AIRFLOW_HOME"] == str(tmp_path) and env["KEEP"] == "1"
    # Tunables keep a value the caller chose.
    tuned = services.airflow_env(config, secrets, base={"AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2"})
    assert tuned["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] == "2"
    assert tuned["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    # Running tasks ride out an api-server restart (tests/faults/test_service_faults.py kills one).
    assert int(env["AIRFLOW__WORKERS__MAX_FAILED_HEARTBEATS"]) >= 10


class FakeGroup:
    """Components that exit on cue, to drive :func:`services.supervise`."""

    def __init__(self, deaths):
        self.deaths = list(deaths)  # per supervision tick: {name: exit code}
        self.restarted = []

    def exited(self):
        return self.deaths.pop(0) if self.deaths else {}

    def restart(self, name):
        self.restarted.append(name)


def test_a_component_that_dies_is_restarted_then_given_up_on(monkeypatch, capsys):
    monkeypatch.setattr(services.time, "sleep", lambda s: None)
    group = FakeGroup([{"dag-processor": 1}, {}, {"dag-processor": 1}, {"dag-processor": 1}])
    assert services.supervise(group, out=sys.stdout, max_restarts=2) == 1
    assert group.restarted == ["dag-processor", "dag-processor"]
    assert "after 2 restarts" in capsys.readouterr().out


def test_health_answer_names_what_is_not_healthy():
    assert services.unhealthy_components(None) == ["api-server"]
    answer = {name: {"status": "healthy"} for name in ("metadatabase", "scheduler", "dag_processor", "triggerer")}
    assert services.unhealthy_components(answer) == []
    answer["scheduler"] = {"status": "unhealthy"}
    assert services.unhealthy_components(answer) == ["scheduler"]


def test_sqlite_is_recognised_from_the_environment_or_airflow_cfg(tmp_path):
    assert services.uses_sqlite({"AIRFLOW_HOME": str(tmp_path)})  # Airflow's default
    assert not services.uses_sqlite({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u@h/db"})
    assert not services.uses_sqlite({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "cat /run/secrets/db"})
    (tmp_path / "airflow.cfg").write_text("[database]\nsql_alchemy_conn = mysql://u@h/db\n")
    assert not services.uses_sqlite({"AIRFLOW_HOME": str(tmp_path)})


def test_the_local_executor_starts_one_worker_per_core_unless_told_otherwise(tmp_path):
    import os

    config = services.ServiceConfig.from_env({"AIRFLOW_HOME": str(tmp_path)})
    env = services.airflow_env(config, {"jwt_secret": "s", "api_secret_key": "k"}, base={})
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(os.cpu_count())
    chosen = services.airflow_env(
        config, {"jwt_secret": "s", "api_secret_key": "k"}, base={"AIRFLOW__CORE__PARALLELISM": "6"}
    )
    assert chosen["AIRFLOW__CORE__PARALLELISM"] == "6"
