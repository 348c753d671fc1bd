"""The run notifications, sent to a real SMTP server (aiosmtpd) on a loopback port.

A failed run and a promotion each send one email with the report's link; a run that promoted nothing
sends none; without the ``dpo_notify`` Connection nothing is sent and nothing is logged above info; a
mail server that is down costs a warning naming the exception type, never an error. The Connection's
password (a planted secret) appears in no message and no log line.
"""

from __future__ import annotations

import html
import json
import logging
import uuid
from email import message_from_bytes, policy
from types import SimpleNamespace

import pytest

from dpo_lib.dag.notifiers import RunNotifier
from dpo_lib.settings import path_safe
from tests.support.storage_emulator import free_port

SECRET = f"planted-secret-{uuid.uuid4().hex}"
RUN = "manual__2026-01-02T03:04:05+00:00_abcd1234"


class Inbox:
    """What the SMTP server received, and the logins it saw."""

    def __init__(self):
        self.messages: list = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == SECRET.encode())


@pytest.fixture
def inbox():
    from aiosmtpd.controller import Controller

    box = Inbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port, authenticator=box.authenticate,
                            auth_require_tls=False)  # fmt: skip
    controller.start()
    box.port = port
    try:
        yield box
    finally:
        controller.stop()


def connect(monkeypatch, port: int, **extra) -> None:
    conn = {
        "conn_type": "smtp", "host": "127.0.0.1", "port": port, "login": "dpo-bot", "password": SECRET,
        "extra": {"to": "ml-team@example.com", "from_email": "dpo@example.com", "disable_tls": True,
                  "disable_ssl": True, "retry_limit": 0, "timeout": 5, **extra},
    }  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_DPO_NOTIFY", json.dumps(conn))


def a_dag():
    from airflow.sdk import DAG

    return DAG("dpo_finetune", schedule=None)


def failure_context(task_id: str = "train") -> dict:
    return {"dag": a_dag(), "run_id": RUN, "reason": "task_failure",
            "ti": SimpleNamespace(task_id=task_id)}  # fmt: skip


def body(message) -> str:
    return html.unescape(message.get_body(("html", "plain")).get_content())


def logged(caplog) -> str:
    return "\n".join(f"{r.levelname} {r.getMessage()}" for r in caplog.records)


def test_a_failed_run_is_emailed_with_its_report_and_no_secret(inbox, monkeypatch, caplog):
    connect(monkeypatch, inbox.port)
    caplog.set_level(logging.DEBUG)
    RunNotifier("failure")(failure_context())

    (message,) = inbox.messages
    assert inbox.logins == [(b"dpo-bot", SECRET.encode())]  # the Connection's credentials were used
    assert message["To"] == "ml-team@example.com" and message["From"] == "dpo@example.com"
    assert message["Subject"] == f"[DPO] dpo_finetune run {RUN} failed at train"
    text = body(message)
    assert "task train failed" in text and "task_failure" in text
    quoted = "manual__2026-01-02T03%3A04%3A05%2B00%3A00_abcd1234"
    assert f"/dpo/runs/dpo_finetune/{quoted}" in text and f"/dags/dpo_finetune/runs/{quoted}/tasks/train" in text
    assert SECRET not in message.as_string() and SECRET not in logged(caplog)


def test_a_promotion_is_emailed_and_a_kept_champion_is_not(inbox, monkeypatch, tmp_path):
    connect(monkeypatch, inbox.port)
    monkeypatch.setenv("DPO_ARTIFACTS_ROOT", str(tmp_path))
    run_dir = tmp_path / "exp" / path_safe(RUN)
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"dag_id": "dpo_finetune", "run_id": RUN}))
    promotion = {"metric": "rewards/accuracies", "min_delta": 0.01, "registered_model_name": "dpo-tiny",
                 "challenger": {"version": "4", "value": 0.9375, "metrics": {"rewards/accuracies": 0.9375}},
                 "champion": {"version": "3", "value": 0.8, "metrics": {"rewards/accuracies": 0.8}},
                 "versions": {"challenger": "4", "champion": "3"}, "decision": "promoted",
                 "reason": "better by 0.1375"}  # fmt: skip
    context = {"dag": a_dag(), "run_id": RUN, "ti": SimpleNamespace(task_id="promote")}

    for decision in ("promoted", "kept", "first"):
        (run_dir / "promotion.json").write_text(json.dumps({**promotion, "decision": decision}))
        RunNotifier("promotion")(context)
    first_subjects = [m["Subject"] for m in inbox.messages]
    assert first_subjects == [
        "[DPO] new champion: dpo-tiny version 4",
        "[DPO] first model registered: dpo-tiny version 4",
    ]
    text = body(inbox.messages[0])
    assert "rewards/accuracies 0.9375 against the champion's 0.8" in text and "better by 0.1375" in text


def test_without_the_connection_nothing_is_sent_and_nothing_is_logged_above_info(inbox, monkeypatch, caplog):
    monkeypatch.delenv("AIRFLOW_CONN_DPO_NOTIFY", raising=False)
    caplog.set_level(logging.DEBUG)
    RunNotifier("failure")(failure_context())
    RunNotifier("promotion")(failure_context("promote"))
    assert inbox.messages == []
    assert [r for r in caplog.records if r.levelno > logging.INFO] == []
    assert "notifications are off" in logged(caplog)


def test_a_mail_server_that_is_down_costs_a_warning_not_the_task(monkeypatch, caplog):
    connect(monkeypatch, free_port())  # nothing listens there
    caplog.set_level(logging.DEBUG)
    RunNotifier("failure")(failure_context())  # does not raise
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("could not send the failure notification" in w for w in warnings), logged(caplog)
    assert SECRET not in logged(caplog)


def test_the_dags_notify_on_failure_and_only_the_promote_task_on_success():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    dags = DagBag(dag_folder=str(REPO / "dags")).dags
    for dag_id in ("dpo_finetune", "dpo_nightly"):
        dag = dags[dag_id]
        callbacks = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
        assert any(isinstance(c, RunNotifier) and c.event == "failure" for c in callbacks)
        for task in dag.tasks:
            success = task.on_success_callback or []
            success = success if isinstance(success, list) else [success]
            notifies = any(isinstance(c, RunNotifier) and c.event == "promotion" for c in success)
            assert notifies == (task.task_id == "promote"), task.task_id
