"""The JSON Schemas, the DAG's Params and the docs' tables all come from the run contract: a test fails
when any of them disagrees with it (dpo_lib/schema_cli.py)."""

import json

import jsonschema
import pytest

from dpo_lib import schema_cli
from dpo_lib.spec import FinetuneRequest, SpecError, TrainConfig
from tests.conftest import REPO


def test_committed_schemas_and_tables_are_what_the_contract_generates():
    assert schema_cli.outdated() == [], "run `python -m dpo_lib schema --write` and commit the result"


def test_a_stale_table_is_found(tmp_path):
    (tmp_path / "configs").symlink_to(REPO / "configs")
    doc = (REPO / "README.md").read_text().replace("`dataset_uri`", "`dataset_url`")
    (tmp_path / "README.md").write_text(doc)
    assert tmp_path / "README.md" in schema_cli.outdated(tmp_path)


def test_every_request_field_and_config_key_is_in_the_tables():
    readme, configuration = (REPO / "README.md").read_text(), (REPO / "docs" / "configuration.md").read_text()
    for name in FinetuneRequest.model_fields:
        assert f"| `{name}` |" in readme and f"| `{name}` |" in configuration
    for key in ("lr", "loss.beta", "loss.label_smoothing", "trainer.reshard_after_forward", "datasets.<name>.uri"):
        assert f"| `{key}` |" in configuration


CASES = [
    {},
    {"exp_name": "a.b-c", "loss": "ipo", "overrides": {"lr": 1e-4, "loss.beta": 0.2}},
    {"exp_name": "../x"},
    {"exp_name": ""},
    {"dataset_uri": ""},
    {"dataset_uri": 3},
    {"loss": "nope"},
    {"model": "gpt-17"},
    {"unknown": 1},
    {"overrides": {"bad key!": 1}},
    {"overrides": {"lr": [1, 2]}},
    {"overrides": "lr=1"},
]


@pytest.mark.parametrize("conf", CASES, ids=json.dumps)
def test_the_json_schema_and_the_contract_agree_on_the_shape_of_a_request(conf):
    schema = json.loads((REPO / "configs" / "schemas" / "request.schema.json").read_text())
    schema_ok = jsonschema.Draft202012Validator(schema).is_valid(conf)
    try:
        FinetuneRequest.parse(conf)
        contract_ok = True
    except SpecError:
        contract_ok = False
    assert schema_ok == contract_ok


def test_the_config_schema_accepts_every_composed_config():
    from dpo_lib.config import compose_config

    schema = json.loads((REPO / "configs" / "schemas" / "config.schema.json").read_text())
    for overrides in (
        ["exp_name=x"],
        ["exp_name=x", "loss=sft", "trainer=fsdp"],
        ["exp_name=x", "trainer=tensor_parallel"],
    ):
        config = compose_config(overrides).model_dump(mode="json")
        jsonschema.validate(config, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**compose_config(["exp_name=x"]).model_dump(mode="json"), "lr": 2.0}, schema)
    assert set(schema["properties"]) == set(TrainConfig.model_fields)
