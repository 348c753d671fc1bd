"""The ``/dpo`` webhook and health check on their own: what a body is refused for, who may trigger, health."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

from dpo_lib.api import health, webhook


def test_a_refused_body_names_each_field_at_once():
    """The webhook refuses what ``validate`` would (the request, then its config) and names every field."""
    assert webhook._problems({"dataset_uri": "d.json"}) == []
    fields = [field for field, _ in webhook._problems({"exp_name": "a/b", "overrides": {"run_dir": "x"}, "x": 1})]
    assert fields == ["exp_name", "overrides.run_dir", "x"]  # an unknown key is named by its own path
    assert webhook._problems([1]) == [("(request)", "the request must be a JSON object, not list")]


def test_requests_checked_at_once_in_the_servers_threads_are_each_answered():
    """The api-server runs ``_problems`` in its thread pool; composing configs must not trip over each other."""
    from concurrent.futures import ThreadPoolExecutor

    conf = {"dataset_uri": "d.json", "exp_name": "at-once", "overrides": {"max_steps": 1}}
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda _: webhook._problems(conf), range(12)))
    assert answers == [[]] * 12


def healthy_airflow():
    return [health.Check("metadatabase", True), health.Check("scheduler", True, {"latest_heartbeat": "now"})]


def registered_dags():
    return health.Check("dags", True)


def test_health_is_200_when_all_checks_pass_and_503_naming_the_others(tmp_path):
    env = {"DPO_WORKDIR": str(tmp_path)}
    status, body = health.report(health.run_checks(env, airflow=healthy_airflow, dags=registered_dags))
    assert status == 200 and body["unhealthy"] == []
    assert body["components"]["storage"] == {"status": "healthy", "backend": "local", "uri": str(tmp_path)}
    assert "docker" not in body["components"]  # the local runner needs no Docker

    status, body = health.report(
        health.run_checks(
            {**env, "DPO_STORAGE_URI": str(tmp_path / "gone")}, airflow=healthy_airflow, dags=registered_dags
        )
    )
    assert status == 503 and body["unhealthy"] == ["storage"]
    assert "is not a directory" in body["components"]["storage"]["error"]


def test_docker_is_checked_only_with_the_docker_runner(tmp_path):
    env = {
        "DPO_WORKDIR": str(tmp_path),
        "DPO_RUNNER": "docker",
        "DPO_DOCKER_URL": "tcp://127.0.0.1:9",  # nothing listens on the discard port
        "DPO_HEALTH_TIMEOUT_S": "1",
    }
    status, body = health.report(health.run_checks(env, airflow=healthy_airflow, dags=registered_dags))
    assert status == 503 and body["unhealthy"] == ["docker"]
    assert body["components"]["docker"]["url"] == "tcp://127.0.0.1:9"


def test_health_reads_the_deployments_environment_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_WORKDIR", str(tmp_path))
    for name in ("DPO_LOCAL_STORAGE_ROOT", "DPO_STORAGE_URI", "DPO_RUNNER"):
        monkeypatch.delenv(name, raising=False)
    status, body = health.report(health.run_checks(airflow=healthy_airflow, dags=registered_dags))
    assert status == 200 and body["components"]["storage"]["uri"] == str(tmp_path)


def test_an_unreachable_bucket_is_unhealthy(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    check = health.check_storage(SimpleNamespace(local_storage_root=None), "gs://some-bucket/datasets/", timeout=1)
    assert not check.healthy and check.details["backend"] == "firebase" and check.details["error"]


def test_webhook_checks_authorization_before_reading_the_body(monkeypatch):
    from fastapi.testclient import TestClient

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


def test_the_dags_are_healthy_only_once_registered_unpaused_and_importable(monkeypatch):
    """/dpo/health answers 200 only when a trigger would be accepted and run."""
    from types import SimpleNamespace

    from airflow.models.dag import DagModel

    models = {
        "dpo_finetune": SimpleNamespace(has_import_errors=False, is_paused=False),
        "dpo_nightly": SimpleNamespace(has_import_errors=False, is_paused=False),
    }
    monkeypatch.setattr(DagModel, "get_current", staticmethod(lambda dag_id: models.get(dag_id)))
    assert health.check_dags().healthy
    del models["dpo_nightly"]
    check = health.check_dags()
    assert not check.healthy and "not registered yet" in check.details["problems"]["dpo_nightly"]
    models["dpo_nightly"] = SimpleNamespace(has_import_errors=False, is_paused=True)
    assert health.check_dags().details["problems"] == {"dpo_nightly": "is paused"}
    models["dpo_finetune"] = SimpleNamespace(has_import_errors=True, is_paused=False)
    assert health.check_dags().details["problems"]["dpo_finetune"] == "has import errors"
    status, body = health.report([*healthy_airflow(), health.check_dags()])
    assert status == 503 and body["unhealthy"] == ["dags"]
