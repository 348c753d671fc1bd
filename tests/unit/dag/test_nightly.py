"""``dpo_nightly``: its timetable and Param defaults, read without the metadata database, and that it shares
``dpo_finetune``'s task graph."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
from airflow.timetables.base import TimeRestriction

from dpo_lib.spec import FinetuneRequest
from tests.conftest import REPO


@pytest.fixture(scope="module")
def dags():
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    assert dagbag.import_errors == {}
    return dagbag.dags


def next_run(dag) -> datetime:
    """When the scheduler would first run ``dag`` (its core timetable, as the scheduler sees it)."""
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable
    info = timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    return info.run_after


def test_nightly_runs_at_two_utc_without_catchup_one_run_at_a_time(dags):
    dag = dags["dpo_nightly"]
    run_after = next_run(dag)
    now = datetime.now(UTC)
    assert (run_after.hour, run_after.minute) == (2, 0) and run_after.utcoffset() == timedelta(0)
    assert now < run_after <= now + timedelta(days=1)  # the next 02:00, not a missed one run at start-up
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.is_paused_upon_creation is False


def test_every_nightly_param_has_a_valid_default(dags):
    defaults = dags["dpo_nightly"].params.dump()
    assert set(defaults) == {"dataset_uri", "model", "model_uri", "loss", "trainer", "adapter", "exp_name", "overrides",
                             "output_uri", "registered_model_name", "promotion"}  # fmt: skip
    assert FinetuneRequest.parse(defaults).model_dump() == defaults
    assert defaults["exp_name"] == "nightly"


def test_schedule_and_dataset_come_from_the_environment_as_airflow_variables():
    code = (
        "import json\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "from airflow.serialization.serialized_objects import DagSerialization\n"
        f"bag = DagBag(dag_folder={str(REPO / 'dags')!r})\n"
        "dag = bag.dags['dpo_nightly']\n"
        "timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable\n"
        "print(json.dumps({'summary': timetable.summary, 'dataset_uri': dag.params.dump()['dataset_uri']}))\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_VAR_DPO_NIGHTLY_SCHEDULE": "30 3 * * 1",
        "AIRFLOW_VAR_DPO_NIGHTLY_DATASET_URI": "gs://prefs-bucket/nightly.jsonl",
    }
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == {
        "summary": "30 3 * * 1",
        "dataset_uri": "gs://prefs-bucket/nightly.jsonl",
    }


def test_both_dags_share_one_task_graph(dags):
    finetune, nightly = dags["dpo_finetune"], dags["dpo_nightly"]
    assert finetune.task_ids == nightly.task_ids
    for task_id in finetune.task_ids:
        a, b = finetune.get_task(task_id), nightly.get_task(task_id)
        assert a.downstream_task_ids == b.downstream_task_ids
        assert type(a) is type(b)
        assert (a.retries, a.pool, a.retry_exponential_backoff) == (b.retries, b.pool, b.retry_exponential_backoff)
    assert type(finetune.timetable).__name__ == "NullTimetable"  # on demand only
    assert finetune.max_active_runs == 16


def test_parsing_the_nightly_dag_asks_no_database(monkeypatch):
    """A top-level ``Variable.get`` made the first parse time out under load; parsing must not call it."""
    import importlib.util

    from airflow.sdk import Variable

    def no_database(*args, **kwargs):
        raise AssertionError("Variable.get while parsing")

    monkeypatch.setattr(Variable, "get", no_database)
    monkeypatch.setenv("DPO_NIGHTLY_SCHEDULE", "15 4 * * *")
    spec = importlib.util.spec_from_file_location("nightly_under_test", REPO / "dags" / "dpo_nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.nightly.schedule == "15 4 * * *"


def test_at_run_time_validate_takes_the_dataset_from_the_variable_unless_the_conf_names_one():
    from types import SimpleNamespace

    from dpo_lib.dag.dag_factory import variable_values

    kept = {"dpo_nightly_dataset_uri": "gs://prefs-bucket/tonight.jsonl"}

    def get(name, default=None):
        return kept.get(name, default)

    variables = {"dataset_uri": "dpo_nightly_dataset_uri"}
    scheduled = {"dag_run": SimpleNamespace(conf={})}
    assert variable_values(variables, scheduled, get) == {"dataset_uri": "gs://prefs-bucket/tonight.jsonl"}
    by_hand = {"dag_run": SimpleNamespace(conf={"dataset_uri": "data/other.json"})}
    assert variable_values(variables, by_hand, get) == {}
    kept.clear()
    assert variable_values(variables, scheduled, get) == {}  # unset: the Param's default stands
