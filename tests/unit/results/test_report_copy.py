"""report.html for a run that ``promote`` did not finish: written by ``cleanup`` with the task states."""

import json
import logging
from pathlib import Path

import pytest

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import staging, tasks
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.orchestration.runs import record_run
from dpo_lib.results.report_copy import REPORT_HTML, write_unfinished_report
from dpo_lib.settings import Settings
from tests.support.settings_under import settings_under

BASE = "http://airflow.example:8080"
FAILED_IN_TRAIN = {
    "validate": "success",
    "stage": "success",
    "train": "failed",
    "evaluate": "upstream_failed",
    "publish": "upstream_failed",
    "compare": "upstream_failed",
    "promote": "upstream_failed",
    "cleanup": "running",
}


@pytest.fixture
def settings(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prefs.json").write_text(json.dumps(make_toy_pairs(50)))
    settings = settings_under(tmp_path)
    monkeypatch.setattr(Settings, "from_env", classmethod(lambda cls: settings))
    return settings


def plan(settings):
    conf = {"dataset_uri": "data/prefs.json", "exp_name": "e"}
    spec = plan_run(conf, dag_id="dpo_finetune", run_id="manual__1", settings=settings)
    spec.write()
    record_run(spec)  # what validate does: the report finds the run folder by it
    return spec


def test_a_failed_run_gets_a_report_naming_the_failed_task(settings):
    spec = plan(settings)
    path = write_unfinished_report(spec, settings, BASE, FAILED_IN_TRAIN)
    assert path == spec.run_dir / REPORT_HTML
    page = path.read_text()
    assert 'id="run-state">failed<' in page
    assert "made by <code>cleanup</code>" in page and "task states as they stood then" in page
    rows = page[page.index('<table id="tasks">') : page.index("</table>", page.index('<table id="tasks">'))]
    assert [row.split("<code>")[1].split("</code>")[0] for row in rows.split("<tr>")[2:]] == list(FAILED_IN_TRAIN)
    assert '<code>train</code></td><td><span class="state failed">failed</span>' in rows
    assert f"{BASE}/dags/dpo_finetune/runs/manual__1" in page
    assert "Not written (the run failed): <code>dataset.json</code>\n (stage)" in page and "None" not in page


def test_a_promoted_run_keeps_the_report_promote_wrote(settings):
    spec = plan(settings)
    (spec.run_dir / REPORT_HTML).write_text("promote's")
    states = {**FAILED_IN_TRAIN, "train": "success", "promote": "success", "evaluate": "success"}
    assert write_unfinished_report(spec, settings, BASE, states) is None
    assert (spec.run_dir / REPORT_HTML).read_text() == "promote's"


def test_a_rerun_that_fails_again_replaces_the_earlier_failure_report(settings):
    spec = plan(settings)
    write_unfinished_report(spec, settings, BASE, FAILED_IN_TRAIN)
    again = {**FAILED_IN_TRAIN, "stage": "failed", "train": "upstream_failed"}
    page = write_unfinished_report(spec, settings, BASE, again).read_text()
    assert '<code>stage</code></td><td><span class="state failed">failed</span>' in page


def test_cleanup_writes_the_report_and_removes_the_staging_folder(settings):
    spec = plan(settings)
    staging.stage_dataset(spec, settings)
    tasks.cleanup(spec.path, task_states=FAILED_IN_TRAIN, report_base=BASE)
    assert "made by <code>cleanup</code>" in (spec.run_dir / REPORT_HTML).read_text()
    assert not Path(spec.staging_dir).exists()


def test_a_report_that_cannot_be_written_is_a_warning_and_cleanup_still_cleans(settings, caplog, monkeypatch):
    import dpo_lib.api.report

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dpo_lib.api.report, "run_page", broken)
    spec = plan(settings)
    staging.stage_dataset(spec, settings)
    with caplog.at_level(logging.WARNING, logger="dpo_lib.orchestration.tasks"):
        tasks.cleanup(spec.path, task_states=FAILED_IN_TRAIN, report_base=BASE)
    assert "no report.html for this run ([Errno 28] No space left on device)" in caplog.text
    assert not (spec.run_dir / REPORT_HTML).exists()
    assert not Path(spec.staging_dir).exists()
