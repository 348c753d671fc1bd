"""The served pipeline end to end on SQLite: REST trigger, webhook, health.

One service group (api-server, scheduler, dag-processor, triggerer) is started for the
module by ``python -m dpo_lib services``, exactly as ``make api`` starts it, and stopped
after the last test. (Forty runs at once, restarts and planted secrets: ``tests/faults/test_service_faults.py``.)
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.airflow_services import check_toy_run_through_rest, make_workdir, running_services
from tests.support.storage_emulator import free_port, storage_emulator

pytestmark = pytest.mark.slow

GPU_SLOTS = 2
BUCKET = "dpo-health-bucket"


@pytest.fixture(scope="module")
def emulator_port():
    """Storage is a bucket on an emulator that the health test starts and stops on this port."""
    return free_port()


@pytest.fixture(scope="module")
def services(tmp_path_factory, emulator_port):
    root = tmp_path_factory.mktemp("serve-sqlite")
    work = make_workdir(root / "work")
    extra = {
        "DPO_GPU_SLOTS": str(GPU_SLOTS),
        "DPO_STORAGE_URI": f"gs://{BUCKET}/datasets/",
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{emulator_port}",
        "DPO_HEALTH_TIMEOUT_S": "2",
    }
    with running_services(root, work, extra) as running:
        yield running


def http(method: str, url: str, *, token: str | None = None, body: bytes | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def files_under(*roots) -> set:
    return {p for root in roots for p in root.rglob("*") if p.is_file()}


# -- health -------------------------------------------------------------------------------


def test_health_is_200_with_every_component_and_503_naming_unreachable_storage(services, emulator_port):
    token = services.token()
    with storage_emulator(bucket=BUCKET, port=emulator_port):
        status, body = http("GET", f"{services.url}/dpo/health", token=token)
        assert status == 200, body
        assert body["status"] == "healthy" and body["unhealthy"] == []
        components = body["components"]
        assert set(components) == {"metadatabase", "scheduler", "dags", "storage"}  # docker: DPO_RUNNER=docker only
        assert components["scheduler"]["latest_heartbeat"]
        assert components["dags"]["status"] == "healthy"  # both DAGs registered, unpaused, importable
        assert services.api().dag_runs("dpo_nightly") == []  # unpaused, but not due while tests run
        assert components["storage"]["backend"] == "firebase"

    status, body = http("GET", f"{services.url}/dpo/health", token=token)
    assert status == 503, body
    assert body["unhealthy"] == ["storage"]
    assert body["components"]["storage"]["status"] == "unhealthy"
    assert body["components"]["storage"]["error"]
    assert body["components"]["metadatabase"]["status"] == "healthy"

    # Without a token (a load balancer's probe): the same verdict, each component's status, no details.
    status, public = http("GET", f"{services.url}/dpo/health")
    assert status == 503
    assert public == {
        "status": "unhealthy",
        "unhealthy": ["storage"],
        "components": {name: {"status": c["status"]} for name, c in body["components"].items()},
    }


# -- webhook ------------------------------------------------------------------------------


def test_webhook_refuses_requests_without_a_valid_token(services):
    body = json.dumps({"exp_name": "nope"}).encode()
    for token in (None, "not-a-jwt", services.token()[:-4] + "abcd"):
        status, answer = http("POST", f"{services.url}/dpo/trigger-finetune", token=token, body=body)
        assert status == 401, (token, answer)


def test_webhook_422_names_the_bad_field_and_413_refuses_large_bodies_leaving_nothing_behind(services):
    api, token = services.api(), services.token()
    runs_before = api.dag_runs("dpo_finetune")
    files_before = files_under(services.staging_root, services.artifacts_root)
    url = f"{services.url}/dpo/trigger-finetune"

    status, answer = http("POST", url, token=token, body=json.dumps({"exp_name": "../escape", "loss": "x"}).encode())
    assert status == 422
    fields = {tuple(error["loc"]) for error in answer["detail"]}
    assert fields == {("body", "exp_name"), ("body", "loss")}

    status, answer = http("POST", url, token=token, body=json.dumps({"overrides": {"run_dir": "/tmp"}}).encode())
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "overrides", "run_dir"]

    status, answer = http("POST", url, token=token, body=b"{not json")
    assert status == 422

    status, answer = http("POST", url, token=token, body=b" " * (64 * 1024 + 1))
    assert status == 413

    assert api.dag_runs("dpo_finetune") == runs_before
    assert files_under(services.staging_root, services.artifacts_root) == files_before


def test_webhook_202_queues_a_run_as_the_calling_user(services):
    # A request that is valid but names no existing file: accepted here, refused when stage reads it.
    request = {"dataset_uri": "data/not-there.json", "exp_name": "webhook"}
    status, answer = http(
        "POST", f"{services.url}/dpo/trigger-finetune", token=services.token(), body=json.dumps(request).encode()
    )
    assert status == 202, answer
    assert answer["dag_id"] == "dpo_finetune" and answer["state"] == "queued"
    assert answer["url"].endswith("/dags/dpo_finetune/runs/" + urllib.request.quote(answer["dag_run_id"], safe=""))

    run = services.api().dag_run("dpo_finetune", answer["dag_run_id"])
    assert run.conf == request
    assert run.triggering_user_name == "admin"
    assert str(getattr(run.triggered_by, "value", run.triggered_by)) == "rest_api"


# -- REST -------------------------------------------------------------------------------------


def test_rest_trigger_runs_the_toy_fine_tune_and_reports_metrics(services):
    check_toy_run_through_rest(services, "rest-toy", max_steps=10)
