"""Fine-tune requests: what is refused, and how a run plan scopes every path by its run."""

import json
import shlex

import pytest
from dpo_lib.orchestration.request import RequestError, hydra_value, plan_run, request_schema, validate_request

from dpo_lib.settings import path_safe
from tests.support.settings_under import settings_under


@pytest.fixture
def settings(tmp_path):
    return settings_under(tmp_path)


def test_schema_lists_the_config_group_options():
    schema = request_schema()
    assert "dpo" in schema["properties"]["loss"]["enum"]
    assert "tiny" in schema["properties"]["model"]["enum"]
    assert schema["properties"]["trainer"]["enum"] == ["basic", "fsdp", "tensor_parallel"]


def test_defaults_fill_a_partial_request():
    request = validate_request({"dataset_uri": "gs://bucket/x.jsonl"})
    assert request["loss"] == "dpo" and request["model"] == "tiny" and request["overrides"] == {}


@pytest.mark.parametrize(
    ("conf", "named"),
    [
        ({"exp_name": "../x"}, "exp_name"),
        ({"unknown": 1}, "unknown"),
        ({"loss": "nope"}, "loss"),
        ({"overrides": {"run_dir": "/etc"}}, "overrides.run_dir"),
        ({"overrides": {"datasets.from_uri.uri": "/etc/passwd"}}, "overrides.datasets.from_uri.uri"),
        ({"overrides": {"model.name_or_path": "/somewhere"}}, "overrides.model.name_or_path"),
        ({"overrides": {"exp_name": "other"}}, "overrides.exp_name"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(conf, named):
    with pytest.raises(RequestError, match=named.replace(".", r"\.")):
        validate_request(conf)


def test_a_request_that_is_not_an_object_is_refused():
    with pytest.raises(RequestError, match="JSON object"):
        validate_request(["dataset_uri"])


def test_bad_training_overrides_are_refused_before_any_data_is_read(settings):
    with pytest.raises(RequestError, match="lr"):
        plan_run({"overrides": {"lr": -1}}, dag_id="d", run_id="r", settings=settings)
    with pytest.raises(RequestError, match="not_a_key"):
        plan_run({"overrides": {"not_a_key": 1}}, dag_id="d", run_id="r", settings=settings)


def test_plans_of_two_runs_share_no_folder(settings):
    a = plan_run(
        {"exp_name": "e"}, dag_id="dpo_finetune", run_id="manual__2026-01-01T00:00:00+00:00", settings=settings
    )
    b = plan_run(
        {"exp_name": "e"}, dag_id="dpo_finetune", run_id="manual__2026-01-02T00:00:00+00:00", settings=settings
    )
    assert a.staging_dir != b.staging_dir and a.run_dir != b.run_dir
    assert a.staging_dir.startswith(str(settings.staging_root))
    assert a.run_dir.startswith(str(settings.artifacts_root / "e"))
    assert ":" not in a.run_dir and "+" not in a.run_dir


def test_the_train_command_carries_the_request(settings):
    plan = plan_run(
        {"dataset_uri": "data/x.jsonl", "loss": "ipo", "exp_name": "e", "overrides": {"lr": 0.001, "loss.beta": 0.3}},
        dag_id="d",
        run_id="r1",
        settings=settings,
    )
    argv = shlex.split(plan.train_command)
    assert argv[:5] == ["/usr/bin/python3", "-u", "-m", "dpo_lib", "train"]
    assert "loss=ipo" in argv and "lr=0.001" in argv and "loss.beta=0.3" in argv
    assert f"datasets.from_uri.uri='{plan.staged_path}'" in argv
    assert plan.staged_path.endswith("dataset.jsonl")
    assert shlex.split(plan.evaluate_command)[-2:] == ["--run-dir", plan.run_dir]


def test_plan_round_trips_through_json(settings):
    plan = plan_run({}, dag_id="d", run_id="r", settings=settings).to_dict()
    assert json.loads(json.dumps(plan)) == plan


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "null"), (True, "true"), (3, "3"), (1e-4, "0.0001"), ("a b", "'a b'"), ("it's", "'it\\'s'")],
)
def test_hydra_value_quotes_strings(value, expected):
    assert hydra_value(value) == expected


def test_path_safe_keeps_one_path_component():
    assert path_safe("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    assert "/" not in path_safe("../../etc") and path_safe("..") not in ("..", ".")
