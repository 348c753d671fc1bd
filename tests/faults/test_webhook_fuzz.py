"""The webhook (``POST /dpo/trigger-finetune``) fuzzed with hypothesis, in-process: the real FastAPI app, Airflow's
real auth manager checking real JWTs, the real body reading and request validation; only the calls that need the
metadata database (revoked tokens, the DAG's team, creating the run) are replaced, the last one by a recorder.
Many examples fit here; ``test_service_faults.py`` sends a few dozen of the same kind to the live api-server.

Whatever the body, the answer is 401 (no valid token), 403 (may not trigger), 413 (over 64 KiB), 422 naming the
bad field, or 202 for a request that passes an independent statement of what is safe; never a 5xx. Only a 202 queues
a run, with exactly the body as its conf, and what it queues plans (as the validate task does) into its own folders."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from dpo_lib.api import webhook
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.settings import Settings
from tests.faults.webhook_bodies import MAX, ROOT, bodies, check_refusal, expected_status

pytestmark = pytest.mark.faults

FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
TOKENS = ["admin"] * 8 + ["viewer", "none", "garbage", "tampered", "basic"]

# ---- the app ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The webhook app with a real SimpleAuthManager; the database calls replaced; ``triggered`` records runs."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.models.dag import DagModel
    from airflow.models.revoked_token import RevokedToken
    from fastapi.testclient import TestClient

    base = tmp_path_factory.mktemp("webhook-fuzz")
    triggered: list[Any] = []

    def trigger(conf, user_name):
        triggered.append(conf)
        return SimpleNamespace(run_id=f"manual__fuzz-{len(triggered)}", state="queued")

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DPO_LOCAL_STORAGE_ROOT", str(ROOT))
        for name, sub in (("DPO_WORKDIR", "work"), ("DPO_STAGING_ROOT", "staging"), ("DPO_ARTIFACTS_ROOT", "runs")):
            patch.setenv(name, str(base / sub))
        patch.setattr(RevokedToken, "is_revoked", classmethod(lambda cls, jti, session=None: False))
        patch.setattr(DagModel, "get_team_name", staticmethod(lambda dag_id, session=None: None))
        patch.setattr(webhook, "_trigger", trigger)
        manager = create_auth_manager()
        admin = manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
        tokens = {
            "admin": admin,
            "viewer": manager.generate_jwt(SimpleAuthManagerUser(username="watcher", role="viewer")),
            "none": None,
            "garbage": "not-a-jwt",
            "tampered": admin[:-6] + ("AAAAAA" if not admin.endswith("AAAAAA") else "BBBBBB"),
            "basic": "Basic YWRtaW46YWRtaW4=",
        }
        client = TestClient(webhook.create_app(), raise_server_exceptions=False)
        yield SimpleNamespace(client=client, tokens=tokens, triggered=triggered, settings=Settings.from_env())


def post(app, token_name: str, body: bytes, chunked: bool = False):
    token = app.tokens[token_name]
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token if token.startswith("Basic ") else f"Bearer {token}"
    content = iter([body[i : i + 8192] for i in range(0, len(body), 8192)] or [b""]) if chunked else body
    return app.client.post("/trigger-finetune", content=content, headers=headers)


def check_answer(app, token_name: str, body: bytes, answer, queued_before: int) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:500], body[:300])
    answered = answer.json()  # every answer is JSON, never an HTML error page
    queued = app.triggered[queued_before:]
    expected = {"none": 401, "garbage": 401, "tampered": 401, "basic": 401, "viewer": 403}.get(token_name)
    expected = expected or expected_status(body, ROOT)
    assert answer.status_code == expected, (answer.status_code, expected, answer.text[:500], body[:300])
    event(f"answered {expected}")
    if expected != 202:
        assert queued == [], "a refused request queued a run"
        check_refusal(expected, answered, body, ROOT)
    if expected == 401:
        assert answer.headers["www-authenticate"] == "Bearer"
    if expected == 202:
        conf = json.loads(body)
        assert queued == [conf], "the run's conf must be exactly the body"
        assert answered["dag_run_id"] == f"manual__fuzz-{len(app.triggered)}" and answered["state"] == "queued"
        check_nothing_bad_reaches_train(app, conf)


def check_nothing_bad_reaches_train(app, conf: dict) -> None:
    """What the validate task does with an accepted request: plan it (never refuse it) inside the roots."""
    settings_ = app.settings
    spec = plan_run(conf, dag_id="dpo_finetune", run_id="manual__fuzz", settings=settings_)
    staging = (settings_.staging_root / "dpo_finetune").resolve()
    assert Path(spec.staging_dir).resolve().is_relative_to(staging)
    assert Path(spec.dataset_path).resolve().is_relative_to(Path(spec.staging_dir).resolve())
    assert spec.run_dir.resolve().parent == (settings_.artifacts_root / spec.request.exp_name).resolve()


# ---- tests ------------------------------------------------------------------------------------------------------


@settings(FUZZ, max_examples=400)
@given(st.sampled_from(TOKENS), bodies(), st.booleans())
@example("admin", b"[" * 100_000 + b"]" * 100_000, False)  # over the limit: 413 before any parsing
@example("admin", b"[" * 30_000 + b"]" * 30_000, False)  # under it, but nested far too deeply for any parser
@example("admin", b'{"overrides": {"\\ud800": 1}, "\\udfff": 2, "exp_name": "\\ud800"}', False)  # lone surrogates
@example("admin", b'{"exp_name": "ok", "dataset_uri": "data/x.json"}\xff', False)
@example("admin", b'{"overrides": {"lr": 1e999, "seed": ' + b"9" * 5000 + b"}}", False)
@example("admin", b'{"dataset_uri": "../../etc/passwd", "exp_name": "../../x"}', False)
@example("admin", b'{"dataset_uri": "/etc/passwd"}', False)
@example("admin", b'{"dataset_uri": "s3://bucket/x.json", "unknown": 1, "exp_name": "ok"}', False)
@example("admin", b'{"exp_name": "' + b"x" * (MAX + 1) + b'"}', True)  # no Content-Length: the stream is cut off
@example("none", b"{}", False)
@example("admin", b'{"dataset_uri": "data/small.json", "exp_name": "fine", "overrides": {"max_steps": 2}}', False)
@example("admin", b'{"exp_name": "fine", "overrides": {"lr": 0.1, "a.b": 1, "trainer.x.y": 2}}', False)
@example("admin", b'{"loss": "sft", "overrides": {"loss.beta": 0.2}}', False)
@example("admin", b'{"exp_name": "../x", "overrides": {"run_dir": "/tmp", "model": "tiny"}}', False)
def test_the_webhook_answers_any_body_with_401_403_413_422_naming_the_field_or_202_for_a_safe_request(
    app, token_name, body, chunked
):
    before = len(app.triggered)
    check_answer(app, token_name, body, post(app, token_name, body, chunked), before)


def test_a_valid_request_is_queued_once_with_the_body_as_its_conf(app):
    conf = {
        "dataset_uri": "data/{{ x }}/small.json",  # queued as written: Airflow renders no conf
        "exp_name": "fine",
        "overrides": {"max_steps": 2, "trainer.attn_implementation": "sdpa"},
    }
    before = len(app.triggered)
    answer = post(app, "admin", json.dumps(conf).encode())
    assert answer.status_code == 202, answer.text
    assert app.triggered[before:] == [conf]
    assert answer.headers["location"].endswith(answer.json()["dag_run_id"])


def test_the_app_serves_no_unauthenticated_pages_but_the_health_check(app, monkeypatch):
    from dpo_lib.api import health

    monkeypatch.setattr(
        health, "run_checks", lambda: [health.Check("storage", False, {"uri": "gs://b/p", "error": "x"})]
    )
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert app.client.get(path).status_code == 404, path
    public = app.client.get("/health")
    assert public.status_code == 503
    assert public.json() == {
        "status": "unhealthy",
        "unhealthy": ["storage"],
        "components": {"storage": {"status": "unhealthy"}},
    }
    detailed = app.client.get("/health", headers={"Authorization": f"Bearer {app.tokens['viewer']}"})
    assert detailed.json()["components"]["storage"] == {"status": "unhealthy", "uri": "gs://b/p", "error": "x"}
    assert app.client.get("/health", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401
