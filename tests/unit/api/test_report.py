"""The run report and the runs list on their own: what a run folder shows at each stage of a run, and who may see it.

The pages are built from run folders written here (a finished run with every file; a run in flight with a
few), and from Airflow runs given as values; the app's auth is checked with a stand-in auth manager.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from dpo_lib.api import report, report_data
from dpo_lib.orchestration.runs import record_dataset, run_dir_of
from dpo_lib.settings import Settings, path_safe

DAG, RUN = "dpo_finetune", "manual__2026-01-02T03:04:05+00:00_abcd1234"
TASKS = [{"task_id": t, "state": "success", "try_number": 1, "start": "2026-01-02 03:04:05 UTC", "duration": "1.0 s"}
         for t in ("validate", "stage", "train", "evaluate", "cleanup")]  # fmt: skip
BASE = "http://airflow.test"


def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DPO_WORKDIR": str(tmp_path), "DPO_ARTIFACTS_ROOT": str(tmp_path / "runs")})


def write_run(root: Path, *, dag_id: str = DAG, run_id: str = RUN, exp: str = "exp1", complete: bool = True) -> Path:
    """A run folder as the pipeline leaves it: everything when ``complete``, else what validate and train wrote."""
    run_dir = root / exp / path_safe(run_id)
    run_dir.mkdir(parents=True)
    request = {"dataset_uri": "data/dataset.json", "exp_name": exp, "model": "tiny", "loss": "dpo"}
    (run_dir / "run.json").write_text(json.dumps({"dag_id": dag_id, "run_id": run_id, "exp_name": exp,
                                                  "request": request}))  # fmt: skip
    (run_dir / "config.json").write_text(
        json.dumps({"exp_name": exp, "lr": 0.001, "loss": {"name": "dpo", "beta": 0.1}})
    )
    lines = []
    for step in range(1, 11):
        lines.append({"step": step, "split": "train", "time": "t",
                      "metrics": {"loss": 0.7 - step * 0.05, "rewards/accuracies": step / 10, "rewards/margins": step * 0.1}})  # fmt: skip
        if step % 5 == 0:
            lines.append({"step": step, "split": "eval", "metrics": {"loss": 0.72 - step * 0.04,
                          "rewards/accuracies": step / 11, "rewards/margins": step * 0.08}})  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\n" + '{"step": 11, "split": "tra'  # a line being written
    (run_dir / "history.jsonl").write_text(text)
    if not complete:
        return run_dir
    record_dataset(run_dir, {"dataset_uri": "data/dataset.json", "sha256": "ab" * 32, "format": "json", "size": 1234,
                             "record_count": 48, "warning_count": 0},  # fmt: skip
                   {"valid_count": 48, "invalid_count": 0, "duplicate_count": 1,
                    "lengths": {"prompt": {"p50": 12.0, "p90": 20.5, "p99": 30.25, "max": 31}}})  # fmt: skip
    (run_dir / "metrics.json").write_text(json.dumps({
        "train": {"step": 10, "loss": 0.2, "rewards/accuracies": 1.0, "rewards/margins": 1.0},
        "eval": {"loss": 0.31, "rewards/accuracies": 0.9375, "rewards/margins": 0.8, "logps/accuracies": 0.9,
                 "reference": {"loss": 0.6931, "logps/accuracies": 0.5}},
    }))  # fmt: skip
    (run_dir / "publish.json").write_text(json.dumps({"output_uri": "gs://prefs/runs/exp1/x/", "version": "4",
                                                      "registered_model_name": "exp1"}))  # fmt: skip
    (run_dir / "promotion.json").write_text(json.dumps({
        "metric": "rewards/accuracies", "min_delta": 0.01, "registered_model_name": "exp1",
        "challenger": {"version": "4", "value": 0.9375, "metrics": {"rewards/accuracies": 0.9375}},
        "champion": {"version": "3", "value": 0.8, "metrics": {"rewards/accuracies": 0.8, "loss": 0.4}},
        "versions": {"challenger": "4", "champion": "3"},
        "decision": "promoted", "reason": "0.9375 beats the champion's 0.8 by more than 0.01",
    }))  # fmt: skip
    (run_dir / "tracking.json").write_text(json.dumps({"tracking_uri": "file:///mlruns", "experiment_id": "1",
                                                       "run_id": "r1", "run_url": "http://mlflow.test/#/runs/r1"}))  # fmt: skip
    (run_dir / "samples.json").write_text(json.dumps([
        {"prompt": "What is 2+2?", "reference": "fish", "champion": "four-ish", "policy": "<b>4</b>"},
    ]))  # fmt: skip
    (run_dir / "final").mkdir()
    (run_dir / "final" / "README.md").write_text("card")
    return run_dir


def airflow_run(state: str = "success") -> report.AirflowRun:
    return report.AirflowRun(DAG, RUN, state, "2026-01-02 03:04:05 UTC", TASKS)


def test_a_finished_run_shows_every_part_of_its_report(tmp_path):
    write_run(tmp_path / "runs")
    html = report.run_page(DAG, RUN, airflow_run(), settings(tmp_path), BASE)

    assert len(re.findall(r'<figure class="plot" data-metric="([^"]+)"', html)) == 3
    assert html.count("<svg") == 3 and "<script" not in html
    assert "Not there yet" not in html
    for task in ("validate", "stage", "train", "evaluate", "cleanup"):
        assert f"<code>{task}</code>" in html
    eval_table = html.split('id="eval"', 1)[1].split("</table>", 1)[0]
    assert "<th>policy</th><th>reference</th><th>champion</th>" in eval_table
    assert "0.9375" in eval_table and "0.6931" in eval_table and "0.8" in eval_table
    assert 'class="state promoted"' in html and "beats the champion" in html
    assert "<td>version 4: 0.9375</td>" in html and "<td>version 3: 0.8</td>" in html
    assert "<code>gs://prefs/runs/exp1/x/</code>" in html and "<code>exp1 version 4</code>" in html
    assert "ab" * 32 in html and "30.25" in html and "1 duplicates" in html
    assert 'href="http://mlflow.test/#/runs/r1"' in html
    assert "&lt;b&gt;4&lt;/b&gt;" in html and "<b>4</b>" not in html  # generations are escaped
    assert "model card <code>README.md</code>" in html
    assert f'href="{BASE}/dags/{DAG}/runs/manual__2026-01-02T03%3A04%3A05%2B00%3A00_abcd1234"' in html
    assert 'target="_blank"' in html and 'target="_top"' not in html

    # In the UI's tab: an iframe whose sandbox lets no link leave it, so none tries to.
    framed = report.run_page(DAG, RUN, airflow_run(), settings(tmp_path), BASE, framed=True)
    assert "open in Airflow" not in framed and "target=" not in framed and framed.count("<svg") == 3


def truncation_record(truncated_pairs: int, lengths: dict | None = None) -> dict:
    return {"tokenizer": "models/tiny", "max_length": 512, "max_prompt_length": 256, "truncation_mode": "keep_end",
            "pair_count": 48, "truncated_pairs": truncated_pairs, "prompt_truncated_pairs": 1,
            "response_truncated_pairs": truncated_pairs - 1, "tokens_dropped": 40, "max_tokens_dropped": 30,
            "lengths": lengths or {}}  # fmt: skip


def test_the_dataset_part_says_what_truncation_cut_with_trains_count_and_stages_lengths(tmp_path):
    run_dir = write_run(tmp_path / "runs")
    staged = truncation_record(5, {"sequence": {"p50": 300.0, "p90": 480.0, "p99": 610.5, "max": 700}})
    record_dataset(run_dir, {"dataset_uri": "data/dataset.json", "sha256": "ab" * 32, "format": "json", "size": 1234,
                             "record_count": 48, "warning_count": 0, "truncation": staged}, None)  # fmt: skip
    metrics = json.loads((run_dir / "metrics.json").read_text())

    def truncation_cell() -> str:
        html = report.run_page(DAG, RUN, airflow_run(), settings(tmp_path), BASE)
        return html.split('id="truncation"', 1)[1].split("</td>", 1)[0] if 'id="truncation"' in html else ""

    assert "5 of 48 pairs (10.42%) lose tokens" in truncation_cell()  # stage's alone, before train
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "data": {"truncation": truncation_record(2)}}))
    html = report.run_page(DAG, RUN, airflow_run(), settings(tmp_path), BASE)
    cell = truncation_cell()
    assert cell.startswith(' class="warn">') and "2 of 48 pairs (4.17%) lose tokens" in cell  # train's count wins
    assert "truncation at max_length 512 (max_prompt_length 256)" in cell
    token_lengths = html.split('id="token-lengths"', 1)[1].split("</table>", 1)[0]
    assert "<td>sequence</td>" in token_lengths and "610.5" in token_lengths  # stage's lengths beside it

    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "data": {"truncation": truncation_record(0)}}))
    assert "none of 48 pairs loses a token" in truncation_cell() and "warn" not in truncation_cell()
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "data": {"truncation": {"pair_count": "many"}}}))
    assert "5 of 48 pairs" in truncation_cell()  # a record of the wrong shape counts as not there
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "data": ["truncation"]}))
    assert "5 of 48 pairs" in truncation_cell()


def test_a_run_in_flight_shows_what_exists_and_names_what_is_not_there_yet(tmp_path):
    write_run(tmp_path / "runs", complete=False)
    html = report.run_page(DAG, RUN, airflow_run("running"), settings(tmp_path), BASE)

    missing = html.split('id="missing"', 1)[1].split("</p>", 1)[0]
    for name in ("dataset.json", "metrics.json", "publish.json", "samples.json", "promotion.json", "tracking.json"):
        assert f"<code>{name}</code>" in missing
    assert "config.json" not in missing and "history.jsonl" not in missing
    assert html.count("<svg") == 3  # the torn last line of history.jsonl is skipped
    assert "No evaluation yet" in html and "No promotion decision" in html and "not staged yet" in html


def test_a_run_airflow_knows_before_validate_and_an_unknown_run(tmp_path):
    html = report.run_page(DAG, RUN, airflow_run("queued"), settings(tmp_path), BASE)
    assert "The run folder has not been created" in html and "<svg" not in html
    assert report.run_page(DAG, "manual__nope", None, settings(tmp_path), BASE) is None
    other = report.run_page("some_other_dag", RUN, airflow_run(), settings(tmp_path), BASE)
    assert "is not a DPO fine-tune DAG" in other


def test_files_of_the_wrong_shape_count_as_not_there(tmp_path):
    run_dir = write_run(tmp_path / "runs")
    (run_dir / "metrics.json").write_text("[1, 2]")
    (run_dir / "promotion.json").write_text("{not json")
    (run_dir / "samples.json").write_text('{"samples": "x"}')
    (run_dir / "history.jsonl").write_text(
        '{"step": "one", "metrics": {}}\n[]\n{"step": 1, "metrics": {"loss": NaN}}\n'
    )
    html = report.run_page(DAG, RUN, airflow_run(), settings(tmp_path), BASE)
    missing = html.split('id="missing"', 1)[1].split("</p>", 1)[0]
    assert all(f"<code>{n}</code>" in missing for n in ("metrics.json", "promotion.json", "samples.json"))
    assert "<svg" not in html and "No logged steps yet" in html  # no finite value to draw


def test_a_tracking_store_is_shown_without_its_credentials(tmp_path):
    run_dir = write_run(tmp_path / "runs")
    record = {"tracking_uri": "https://bot:s3cret-token@mlflow.test/?key=s3cret-key", "experiment_id": "1",
              "experiment_name": "dpo", "run_id": "r1", "ui_url": None}  # fmt: skip
    (run_dir / "tracking.json").write_text(json.dumps(record))
    html = report.run_page(DAG, RUN, airflow_run(), settings(tmp_path), BASE)
    assert "<code>https://mlflow.test/</code>" in html and "<code>r1</code>" in html
    assert "s3cret" not in html


def test_the_run_folder_is_found_from_dag_and_run_id_alone(tmp_path):
    root = tmp_path / "runs"
    run_dir = write_run(root, exp="b")
    write_run(root, dag_id="dpo_nightly", run_id="scheduled__x", exp="a")
    assert run_dir_of(DAG, RUN, settings(tmp_path)) == run_dir
    assert run_dir_of("dpo_nightly", RUN, settings(tmp_path)) is None  # same key, other DAG
    assert run_dir_of(DAG, "manual__other", settings(tmp_path)) is None
    assert run_dir_of(DAG, RUN, Settings.from_env({"DPO_ARTIFACTS_ROOT": str(tmp_path / "none")})) is None


def test_the_runs_list_compares_metrics_and_decisions(tmp_path):
    run_dir = write_run(tmp_path / "runs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "data": {"truncation": truncation_record(2)}}))
    write_run(tmp_path / "runs", run_id="manual__second", complete=False)
    runs = [report.AirflowRun(DAG, "manual__second", "running", None, []), airflow_run(),
            report.AirflowRun("dpo_nightly", "scheduled__never", "queued", None, [])]  # fmt: skip
    html = report.runs_page([DAG, "dpo_nightly"], runs, settings(tmp_path), BASE)
    rows = html.split('id="runs"', 1)[1].split("</tr>")[1:-1]
    assert len(rows) == 3
    assert "0.9375" in rows[1] and "promoted" in rows[1] and "0.5" in rows[1] and "abababab" in rows[1]
    assert '<td class="num warn">4.2 %</td>' in rows[1]  # 2 of 48 pairs truncated
    assert f'href="{BASE}/dpo/runs/{DAG}/manual__second"' in rows[0] and "promoted" not in rows[0]
    assert " %</td>" not in rows[0]  # not trained yet: nothing counted


def test_curves_keep_the_last_value_logged_for_a_step():
    history = [{"step": 1, "split": "train", "metrics": {"loss": 1.0}}, {"step": 2, "metrics": {"loss": 0.5}},
               {"step": 1, "split": "train", "metrics": {"loss": 0.9}}]  # fmt: skip
    assert report_data.curves(history) == {"loss": {"train": [(1.0, 0.9), (2.0, 0.5)]}}


# -- the app: who may see a report -----------------------------------------------------------------------


class FakeAuthManager:
    """Accepts the token "good" only; the login page is /auth/login."""

    async def get_user_from_token(self, token):
        from jwt import InvalidTokenError

        if token != "good":
            raise InvalidTokenError("bad signature")
        return SimpleNamespace(get_name=lambda: "admin")

    def get_url_login(self, next_url=None):
        return f"/auth/login?next={next_url}"


@pytest.fixture
def client(tmp_path, monkeypatch):
    import airflow.api_fastapi.app as airflow_app
    from fastapi.testclient import TestClient

    from dpo_lib.api.webhook import create_app

    write_run(tmp_path / "runs")
    monkeypatch.setenv("DPO_WORKDIR", str(tmp_path))
    monkeypatch.setenv("DPO_ARTIFACTS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setattr(airflow_app, "get_auth_manager", lambda: FakeAuthManager())
    monkeypatch.setattr(report, "may_read", lambda user, dag_id: dag_id != "secret_dag")
    monkeypatch.setattr(report, "airflow_run", lambda dag_id, run_id: airflow_run() if run_id == RUN else None)
    monkeypatch.setattr(report, "recent_runs", lambda dag_ids, limit: [airflow_run()])
    monkeypatch.setattr(report, "_base", lambda request: BASE)
    return TestClient(create_app())


def test_a_report_needs_a_token_or_the_ui_session(client):
    url = f"/runs/{DAG}/{RUN}"
    for headers, cookies in (({}, {}), ({"Authorization": "Bearer bad"}, {}), ({}, {"_token": "bad"})):
        client.cookies.clear()
        client.cookies.update(cookies)
        answer = client.get(url, headers=headers, follow_redirects=False)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", (headers, cookies)
        assert "<svg" not in answer.text
    client.cookies.clear()
    answer = client.get(url, headers={"Accept": "text/html"}, follow_redirects=False)  # a browser: to the login
    assert answer.status_code == 303 and answer.headers["location"].startswith("/auth/login?next=")

    for headers, cookies in (({"Authorization": "Bearer good"}, {}), ({}, {"_token": "good"})):
        client.cookies.clear()
        client.cookies.update(cookies)
        answer = client.get(url, headers=headers)
        assert answer.status_code == 200 and answer.text.count("<svg") == 3
        assert "default-src 'none'" in answer.headers["content-security-policy"]
    client.cookies.clear()
    client.cookies.update({"_token": "good"})  # an explicit header wins over the cookie
    assert client.get(url, headers={"Authorization": "Bearer bad"}).status_code == 401


def test_a_report_is_403_without_read_access_and_404_for_no_such_run(client):
    headers = {"Authorization": "Bearer good"}
    assert client.get(f"/runs/secret_dag/{RUN}", headers=headers).status_code == 403
    assert client.get(f"/runs/{DAG}/manual__none", headers=headers).status_code == 404
    answer = client.get("/runs", headers=headers)
    assert answer.status_code == 200 and "promoted" in answer.text
    assert client.get("/runs").status_code == 401


def test_the_plugin_puts_a_report_tab_on_each_run_and_the_runs_list_in_the_navigation():
    import importlib.util

    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("dpo_plugin", REPO / "plugins" / "dpo_plugin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    views = {view["destination"]: ExternalViewResponse(**view) for view in module.DpoPlugin.external_views}
    assert views["dag_run"].href == "dpo/runs/{DAG_ID}/{RUN_ID}"  # relative: the UI resolves it under its base URL
    assert views["nav"].href == "dpo/runs" and views["nav"].category == "browse"
    (app,) = module.DpoPlugin.fastapi_apps
    assert app["url_prefix"] == "/dpo"
    paths = {route.path for route in app["app"].routes}
    assert {"/runs", "/runs/{dag_id}/{run_id:path}", "/trigger-finetune", "/health"} <= paths
