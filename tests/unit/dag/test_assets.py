"""The Assets the fine-tune emits: which asset a dataset or model is, when an event is added, and that the
README's asset-scheduled DAG parses and is scheduled on the very asset ``stage`` emits."""

from __future__ import annotations

import re
from pathlib import Path

from airflow.sdk import Asset

from dpo_lib.dag.assets import DATASET_ALIAS, MODEL_ALIAS, dataset_asset, emit_dataset, emit_model, model_asset
from dpo_lib.settings import Settings
from tests.conftest import REPO


class OutletEvents(dict):
    """Stands in for the task context's ``outlet_events``: one accessor per alias, recording what is added."""

    def __missing__(self, key):
        self[key] = Accessor()
        return self[key]


class Accessor:
    def __init__(self):
        self.added = []

    def add(self, asset, extra=None):
        self.added.append((asset, extra))


def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"DPO_WORKDIR": str(tmp_path), "DPO_ARTIFACTS_ROOT": str(tmp_path / "runs")})


def test_a_dataset_is_its_uri_and_a_local_one_its_absolute_file_uri(tmp_path):
    assert dataset_asset("gs://prefs/train.jsonl").uri == "gs://prefs/train.jsonl"
    assert dataset_asset("data/d.json", tmp_path).uri == (tmp_path / "data" / "d.json").as_uri()
    assert dataset_asset(f"file://{tmp_path}/d.json", tmp_path / "elsewhere").uri == f"file://{tmp_path}/d.json"
    assert model_asset("dpo-tiny") == Asset(uri="models:/dpo-tiny")


def test_a_dataset_event_is_added_when_its_content_changed(tmp_path):
    manifest = {"dataset_uri": "gs://prefs/train.jsonl", "sha256": "a" * 64, "record_count": 48}
    events = OutletEvents()
    for sha, run in (("a" * 64, "r1"), ("a" * 64, "r2"), ("b" * 64, "r3")):
        emit_dataset(events, {**manifest, "sha256": sha}, dag_id="dpo_nightly", run_id=run, settings=settings(tmp_path))
    added = events[DATASET_ALIAS].added
    assert [(a.uri, e["run_id"], e["previous_sha256"]) for a, e in added] == [
        ("gs://prefs/train.jsonl", "r1", None),
        ("gs://prefs/train.jsonl", "r3", "a" * 64),  # r2 staged the same content: no event
    ]
    assert added[1][1]["sha256"] == "b" * 64 and added[1][1]["record_count"] == 48


def test_a_model_event_is_added_for_a_promotion_only():
    events = OutletEvents()
    promotion = {"registered_model_name": "dpo-tiny", "metric": "rewards/accuracies", "versions": {"challenger": 4}}
    for decision in ("kept", "promoted", "first"):
        emit_model(events, {**promotion, "decision": decision}, dag_id="dpo_finetune", run_id="r")
    emit_model(events, None, dag_id="dpo_finetune", run_id="r")
    added = events[MODEL_ALIAS].added
    assert [(a.uri, e["decision"], e["version"]) for a, e in added] == [
        ("models:/dpo-tiny", "promoted", 4),
        ("models:/dpo-tiny", "first", 4),
    ]


def test_stage_has_the_dataset_alias_as_its_outlet():
    from airflow.dag_processing.dagbag import DagBag

    dags = DagBag(dag_folder=str(REPO / "dags")).dags
    for dag_id in ("dpo_finetune", "dpo_nightly"):
        tasks = dags[dag_id].task_dict
        assert DATASET_ALIAS in tasks["stage"].outlets
        if "promote" in tasks:
            assert MODEL_ALIAS in tasks["promote"].outlets


def test_the_readme_example_dag_parses_and_is_scheduled_on_the_asset_stage_emits(tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    readme = (REPO / "README.md").read_text()
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "schedule=Asset(" in block]
    (tmp_path / "on_new_prefs.py").write_text(example)
    dagbag = DagBag(dag_folder=str(tmp_path))
    assert dagbag.import_errors == {}
    (dag,) = dagbag.dags.values()
    (uri,) = re.findall(r'Asset\("([^"]+)"\)', example)
    condition = dag.timetable.asset_condition
    assert isinstance(condition, Asset) and condition.uri == dataset_asset(uri).uri  # what stage emits for it
