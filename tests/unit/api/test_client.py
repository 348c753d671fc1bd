"""The REST client and ``python -m dpo_lib trigger`` on their own: credentials, run ids, conf, logs, pools."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from dpo_lib.airflow_local.home import AirflowHome
from dpo_lib.api.client import Credentials, render_log
from dpo_lib.api.trigger_cli import ConfError, read_conf
from dpo_lib.orchestration.names import new_run_id


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
        with pytest.raises(ConfError):
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
