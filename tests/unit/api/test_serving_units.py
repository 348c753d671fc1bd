"""The serving pieces on their own: AIRFLOW_HOME secrets, service environment, supervision, client, health."""

from __future__ import annotations

import json
import re
import stat
import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from dpo_lib.orchestration.request import request_problems

from dpo_lib.airflow_local import services
from dpo_lib.airflow_local.home import AirflowHome
from dpo_lib.api import health
from dpo_lib.api.client import Credentials, render_log
from dpo_lib.api.trigger_cli import read_conf
from dpo_lib.orchestration.names import new_run_id


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- AIRFLOW_HOME ---------------------------------------------------------------------------


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


# -- the services' configuration -----------------------------------------------------------


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


# -- client and trigger command ---------------------------------------------------------------


def test_credentials_fall_back_to_the_password_kept_in_airflow_home(tmp_path):
    AirflowHome(tmp_path).write_admin("admin", "kept")
    credentials = Credentials.from_env({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW_PORT": "9000"})
    assert credentials == Credentials("http://localhost:9000", "admin", "kept")
    explicit = Credentials.from_env({"AIRFLOW_URL": "http://af:8080/", "AIRFLOW_ADMIN_PASSWORD": "x"})
    assert explicit == Credentials("http://af:8080", "admin", "x")


def test_run_ids_look_like_airflows_and_differ_even_in_the_same_microsecond():
    now = datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    first, second = new_run_id(now), new_run_id(now)
    assert first.startswith("manual__2026-01-01T12:00:00.123456+00:00_") and first != second
    assert re.fullmatch(r"[A-Za-z0-9_.~:+-]+", first)  # Airflow's default allowed_run_id_pattern


def test_trigger_conf_is_json_or_a_file(tmp_path):
    assert read_conf('{"exp_name": "a"}') == {"exp_name": "a"}
    path = tmp_path / "conf.json"
    path.write_text('{"exp_name": "b"}')
    assert read_conf(str(path)) == {"exp_name": "b"}
    for bad in ("[1, 2]", str(tmp_path / "missing.json"), "{nope"):
        with pytest.raises(SystemExit):
            read_conf(bad)


def test_logs_render_level_event_and_the_exception():
    text = render_log(
        [
            "source line",
            {"timestamp": "T1", "level": "info", "event": "train: try 2 of 3"},
            {"timestamp": "T2", "level": "error", "event": "Task failed", "error_detail": [
                {"exc_type": "StorageUnavailable", "exc_value": "gs://b/x: cannot reach"}]},
        ]
    )  # fmt: skip
    assert text.splitlines() == [
        "source line",
        "T1 info train: try 2 of 3",
        "T2 error Task failed",
        "    StorageUnavailable: gs://b/x: cannot reach",
    ]


def test_request_problems_name_each_field():
    assert request_problems({"dataset_uri": "d.json"}) == []
    fields = [field for field, _ in request_problems({"exp_name": "a/b", "overrides": {"run_dir": "x"}, "x": 1})]
    assert fields == ["exp_name", "overrides.run_dir", "x"]  # an unknown key is named by its own path
    assert request_problems([1]) == [("(request)", "the request must be a JSON object, not list")]


# -- health ---------------------------------------------------------------------------------


def healthy_airflow():
    return [health.Check("metadatabase", True), health.Check("scheduler", True, {"latest_heartbeat": "now"})]


def test_health_is_200_when_all_checks_pass_and_503_naming_the_others(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_WORKDIR", str(tmp_path))
    monkeypatch.delenv("DPO_LOCAL_STORAGE_ROOT", raising=False)
    monkeypatch.delenv("DPO_RUNNER", raising=False)
    status, body = health.report(health.run_checks({}, airflow=healthy_airflow))
    assert status == 200 and body["unhealthy"] == []
    assert body["components"]["storage"] == {"status": "healthy", "backend": "local", "uri": str(tmp_path)}

    status, body = health.report(
        health.run_checks({"DPO_STORAGE_URI": str(tmp_path / "gone")}, airflow=healthy_airflow)
    )
    assert status == 503 and body["unhealthy"] == ["storage"]
    assert "is not a directory" in body["components"]["storage"]["error"]


def test_docker_is_checked_only_with_the_docker_runner(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_WORKDIR", str(tmp_path))
    monkeypatch.setenv("DPO_RUNNER", "docker")
    monkeypatch.setenv("DPO_DOCKER_URL", "tcp://127.0.0.1:9")  # nothing listens on the discard port
    status, body = health.report(health.run_checks({"DPO_HEALTH_TIMEOUT_S": "1"}, airflow=healthy_airflow))
    assert status == 503 and body["unhealthy"] == ["docker"]
    assert body["components"]["docker"]["url"] == "tcp://127.0.0.1:9"


def test_an_unreachable_bucket_is_unhealthy(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    check = health.check_storage(SimpleNamespace(local_storage_root=None), "gs://some-bucket/datasets/", timeout=1)
    assert not check.healthy and check.details["backend"] == "firebase" and check.details["error"]


def test_the_gpu_pool_is_created_once_then_resized(monkeypatch):
    from dpo_lib.api.client import AirflowAPI, AirflowAPIError

    api = AirflowAPI("http://airflow.invalid", "token")
    calls, existing = [], set()

    def call(what, fn, *args, **kwargs):
        calls.append(fn.__name__)
        if fn.__name__ == "get_pool" and args[0] not in existing:
            raise AirflowAPIError("not found", 404)
        if fn.__name__ == "post_pool":
            existing.add(args[0].name)
        if fn.__name__ == "patch_pool":
            assert args[1].to_dict() == {"pool": "gpu", "slots": 4, "description": "d", "include_deferred": False}

    monkeypatch.setattr(api, "_call", call)
    api.ensure_pool("gpu", 2, "d")
    api.ensure_pool("gpu", 4, "d")
    assert calls == ["get_pool", "post_pool", "get_pool", "patch_pool"]


def test_sqlite_is_recognised_from_the_environment_or_airflow_cfg(tmp_path):
    assert services.uses_sqlite({"AIRFLOW_HOME": str(tmp_path)})  # Airflow's default
    assert not services.uses_sqlite({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://u@h/db"})
    assert not services.uses_sqlite({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "cat /run/secrets/db"})
    (tmp_path / "airflow.cfg").write_text("[database]\nsql_alchemy_conn = mysql://u@h/db\n")
    assert not services.uses_sqlite({"AIRFLOW_HOME": str(tmp_path)})


def test_webhook_checks_authorization_before_reading_the_body(monkeypatch):
    from fastapi.testclient import TestClient

    from dpo_lib.api import webhook

    user = SimpleNamespace(get_name=lambda: "viewer")

    async def authenticated(request):
        return user

    triggered = []
    monkeypatch.setattr(webhook, "_authenticated_user", authenticated)
    monkeypatch.setattr(webhook, "_may_trigger", lambda u: False)
    monkeypatch.setattr(webhook, "_trigger", lambda conf, name: triggered.append(conf))
    client = TestClient(webhook.create_app())

    answer = client.post("/trigger-finetune", content=b"{not even json")
    assert answer.status_code == 403 and "viewer" in answer.json()["detail"]
    assert triggered == []


def test_webhook_triggers_in_the_same_microsecond_get_different_run_ids(monkeypatch):
    import airflow.api.common.trigger_dag as airflow_trigger
    from airflow.models.dag import DagModel

    from dpo_lib.api import webhook
    from dpo_lib.orchestration import names

    frozen = datetime(2026, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(names, "datetime", SimpleNamespace(now=lambda tz: frozen))
    monkeypatch.setattr(DagModel, "get_current", lambda *args, **kwargs: SimpleNamespace(has_import_errors=False))
    triggered = []
    monkeypatch.setattr(airflow_trigger, "trigger_dag", lambda dag_id, **kwargs: triggered.append(kwargs["run_id"]))

    webhook._trigger({"exp_name": "a"}, "admin")
    webhook._trigger({"exp_name": "a"}, "admin")

    assert len(set(triggered)) == 2 and all(
        run_id.startswith("manual__2026-01-01T00:00:00+00:00_") for run_id in triggered
    )
