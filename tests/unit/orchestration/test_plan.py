"""Fine-tune requests resolved into run specs: what is refused, naming the field, and how a spec scopes
every path by its run (dpo_lib/orchestration/plan.py)."""

import json

import pytest

from dpo_lib.orchestration.plan import plan_run
from dpo_lib.settings import path_safe
from dpo_lib.spec import DPOLossConfig, IPOLossConfig, RunSpec, SpecError
from tests.support.settings_under import settings_under


@pytest.fixture
def settings(tmp_path):
    return settings_under(tmp_path)


def plan(settings, conf=None, run_id="r"):
    return plan_run(conf or {}, dag_id="dpo_finetune", run_id=run_id, settings=settings)


def problems(settings, conf) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        plan(settings, conf)
    return info.value.problems


def test_defaults_fill_a_partial_request(settings):
    spec = plan(settings, {"dataset_uri": "gs://bucket-a/x.jsonl"})
    assert (spec.request.loss, spec.request.model, spec.request.overrides) == ("dpo", "tiny", {})
    assert spec.train.loss == DPOLossConfig()


@pytest.mark.parametrize(
    ("conf", "field", "reason"),
    [
        ({"exp_name": "../x"}, "exp_name", "should match pattern"),
        ({"unknown": 1}, "unknown", "unknown field; expected one of dataset_uri"),
        ({"loss": "nope"}, "loss", "not a configs/loss/ option"),
        ({"overrides": {"run_dir": "/etc"}}, "overrides.run_dir", "set by the pipeline"),
        ({"overrides": {"datasets.from_uri.uri": "/etc/passwd"}}, "overrides.datasets.from_uri.uri", "set by the"),
        ({"overrides": {"model.name_or_path": "/somewhere"}}, "overrides.model.name_or_path", "set by the"),
        ({"overrides": {"exp_name": "other"}}, "overrides.exp_name", "set by the pipeline"),
        ({"overrides": {"loss.name": "sft"}}, "overrides.loss.name", "chosen by loss=..."),
        ({"overrides": {"trainer.name": "fsdp"}}, "overrides.trainer.name", "chosen by trainer=..."),
        ({"overrides": {"hydra.run.dir": "/tmp"}}, "overrides.hydra.run.dir", "Hydra's own settings"),
        ({"overrides": {"hydra.job.chdir": True}}, "overrides.hydra.job.chdir", "Hydra's own settings"),
        ({"overrides": {"hydra.mode": "MULTIRUN"}}, "overrides.hydra.mode", "Hydra's own settings"),
        ({"overrides": {"lr": -1}}, "overrides.lr", "greater than 0"),
        ({"overrides": {"not_a_key": 1}}, "overrides.not_a_key", "not a field here"),
        ({"overrides": {"max_steps": 1e12}}, "overrides.max_steps", "valid integer"),
        ({"overrides": {"max_steps": 10**12}}, "overrides.max_steps", "less than or equal to 1000000"),
        ({"overrides": {"lr": 1e6}}, "overrides.lr", "less than or equal to 1"),
        ({"overrides": {"batch_size": 10**9}}, "overrides.batch_size", "less than or equal to 4096"),
        ({"overrides": {"max_length": 10**9}}, "overrides.max_length", "less than or equal to 131072"),
        ({"overrides": {"loss.beta": 0.2}, "loss": "sft"}, "overrides.loss.beta", "not a field of the sft loss"),
        ({"dataset_uri": "gs://bu..cket/x.json"}, "dataset_uri", "must not be empty"),
        ({"dataset_uri": "gs://192.168.1.1/x.json"}, "dataset_uri", "must not be an IP address"),
        ({"dataset_uri": "gs://googbucket/x.json"}, "dataset_uri", "must not start with 'goog'"),
        ({"dataset_uri": "s3://bucket/x.json"}, "dataset_uri", "unsupported scheme 's3'"),
    ],
    ids=lambda v: json.dumps(v) if isinstance(v, dict) else None,
)
def test_bad_requests_are_refused_naming_the_field(settings, conf, field, reason):
    found = problems(settings, conf)
    assert any(f == field and reason in why for f, why in found), found


def test_a_request_that_is_not_an_object_is_refused(settings):
    assert problems(settings, ["dataset_uri"]) == [("(request)", "the request must be a JSON object, not list")]


def test_overrides_reach_the_training_config_as_values(settings):
    spec = plan(settings, {"loss": "ipo", "overrides": {"lr": 0.001, "loss.beta": 0.3, "seed": 7}})
    assert spec.train.loss == IPOLossConfig(beta=0.3)
    assert (spec.train.lr, spec.train.seed) == (0.001, 7)


def test_specs_of_two_runs_share_no_folder(settings):
    a = plan(settings, {"exp_name": "e"}, run_id="manual__2026-01-01T00:00:00+00:00")
    b = plan(settings, {"exp_name": "e"}, run_id="manual__2026-01-02T00:00:00+00:00")
    assert a.staging_dir != b.staging_dir and a.run_dir != b.run_dir
    assert a.staging_dir.startswith(str(settings.staging_root))
    assert str(a.run_dir).startswith(str(settings.artifacts_root / "e"))
    assert ":" not in str(a.run_dir) and "+" not in str(a.run_dir)


def test_the_spec_points_training_at_the_staged_copy(settings):
    spec = plan(settings, {"dataset_uri": "data/x.jsonl", "exp_name": "e"}, run_id="r1")
    assert spec.dataset_path.endswith("dataset.jsonl") and spec.dataset_path.startswith(spec.staging_dir)
    assert spec.train.datasets["from_uri"].uri == spec.dataset_path
    assert spec.train.run_dir == str(spec.run_dir) and spec.train.exp_name == "e"


def test_the_spec_round_trips_through_its_file(settings):
    spec = plan(settings, {"overrides": {"loss.beta": 0.25}})
    path = spec.write()
    assert path == spec.path and json.loads(path.read_text())["train"]["loss"]["beta"] == 0.25
    assert RunSpec.read(path) == spec


def test_max_length_beyond_the_models_positions_is_refused(settings, tiny_model_dir):
    positions = json.loads((tiny_model_dir / "config.json").read_text())["max_position_embeddings"]
    (settings.workdir / "models").symlink_to(tiny_model_dir.parent)
    assert plan(settings, {"overrides": {"max_length": positions}}).train.max_length == positions
    found = problems(settings, {"overrides": {"max_length": positions + 1}})
    assert found == [("overrides.max_length", f"{positions + 1} is more than the model takes "
                                              f"(tiny: max_position_embeddings {positions})")]  # fmt: skip


def test_path_safe_keeps_one_path_component():
    assert path_safe("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
    assert "/" not in path_safe("../../etc") and path_safe("..") not in ("..", ".")
