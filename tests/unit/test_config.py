"""Composing a TrainConfig from configs/ presets and overrides (dpo_lib/config.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_lib.config import ConfigError, build_config, compose_config
from dpo_lib.spec import DPOLossConfig, IPOLossConfig, SFTLossConfig, TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_defaults_compose_to_the_tiny_model_dpo_and_toy_data():
    config = compose_config(["exp_name=demo"])
    assert isinstance(config, TrainConfig)
    assert config.exp_name == "demo"
    assert config.run_dir == "artifacts/runs/demo"  # derived from exp_name
    assert config.model.model_dump() == {"name": "tiny", "name_or_path": "models/tiny", "tokenizer_name_or_path": None}
    assert config.loss == DPOLossConfig(beta=0.1, label_smoothing=0.0)
    assert (config.trainer.name, config.trainer.device, config.trainer.precision) == ("basic", "auto", "auto")
    assert list(config.datasets) == ["toy"] and config.datasets["toy"].uri == "data/dataset.json"
    assert (config.lr, config.max_steps, config.batch_size) == (5.0e-4, 120, 8)


def test_overrides_choose_presets_and_set_values(tmp_path):
    config = compose_config(
        ["exp_name=demo", "lr=1e-4", "max_steps=200", f"run_dir={tmp_path}", "loss=ipo", "loss.beta=0.2",
         "datasets=[toy]", "datasets.toy.eval_fraction=0.2"]
    )  # fmt: skip
    assert config.lr == pytest.approx(1e-4) and isinstance(config.lr, float)
    assert config.max_steps == 200 and isinstance(config.max_steps, int)
    assert config.run_dir == str(tmp_path)
    assert config.loss == IPOLossConfig(beta=0.2)  # IPO has no label_smoothing
    assert config.datasets["toy"].eval_fraction == 0.2


def test_sft_needs_no_beta_and_takes_none():
    assert compose_config(["exp_name=demo", "loss=sft"]).loss == SFTLossConfig()
    with pytest.raises(ConfigError, match="loss.beta: not a field of the sft loss"):
        compose_config(["exp_name=demo", "loss=sft", "loss.beta=0.2"])


def test_the_config_round_trips_through_json():
    config = compose_config(["exp_name=demo", "trainer=fsdp", "trainer.nproc=2"])
    assert TrainConfig.model_validate_json(config.model_dump_json()) == config


def test_values_are_data_never_interpolated(monkeypatch):
    monkeypatch.setenv("SECRET_FOR_TEST", "leaked")
    config = build_config(["model=tiny"], {"exp_name": "x", "datasets.toy.uri": "${oc.env:SECRET_FOR_TEST}"})
    assert config.datasets["toy"].uri == "${oc.env:SECRET_FOR_TEST}"


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ([], "exp_name", "a value is required"),
        (["exp_name=x", "lr=-1"], "lr", "greater than 0"),
        (["exp_name=x", "lr=abc"], "lr", "valid number"),
        (["exp_name=x", "foo=1"], "foo", "not a field here"),
        (["exp_name=x", "loss.foo=1"], "loss.foo", "not a field of the dpo loss"),
        (["exp_name=x", "trainer.nproc=2"], "trainer.nproc", "not a field of the basic trainer"),
        (["exp_name=x", "loss=nope"], "loss", "'nope' is not a configs/loss/ preset; choose one of dpo, hinge, ipo"),
        (["exp_name=x", "loss.name=sft"], "loss.name", "chosen by loss=..."),
        (["exp_name=x", "trainer.name=fsdp"], "trainer.name", "chosen by trainer=..."),
        (["exp_name=x", "hydra.run.dir=/tmp"], "hydra.run.dir", "Hydra's own settings"),
        (["exp_name=a/b"], "exp_name", "should match pattern"),
        (["exp_name=.."], "exp_name", "should match pattern"),
        (["exp_name=x", "loss.beta=0"], "loss.beta", "greater than 0"),
        (["exp_name=x", "loss.label_smoothing=0.5"], "loss.label_smoothing", "less than 0.5"),
        (["exp_name=x", "max_prompt_length=128"], "max_prompt_length", "smaller than max_length (128)"),
        (["exp_name=x", "max_length=64"], "max_prompt_length", "smaller than max_length (64)"),
        (["exp_name=x", "trainer.device=tpu"], "trainer.device", "'auto', 'cpu' or 'cuda'"),
        (["exp_name=x", "max_steps=0"], "max_steps", "greater than or equal to 1"),
        (["exp_name=x", "max_steps=1000000000000"], "max_steps", "less than or equal to 1000000"),
        (["exp_name=x", "max_steps=1e12"], "max_steps", "valid integer"),
        (["exp_name=x", "batch_size=1000000000"], "batch_size", "less than or equal to 4096"),
        (["exp_name=x", "lr=1000000.0"], "lr", "less than or equal to 1"),
        (["exp_name=x", "max_length=1000000"], "max_length", "less than or equal to 131072"),
        (["exp_name=x", "truncation_mode=middle"], "truncation_mode", "'keep_end' or 'keep_start'"),
        (["exp_name=x", "~lr"], "lr", "only key=value overrides"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_config_errors_name_the_key_and_the_reason(overrides, key, reason):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    assert any(field == key and reason in why for field, why in info.value.problems), info.value.problems
    assert "Config search path" not in str(info.value)


def test_config_errors_list_every_violation_at_once():
    with pytest.raises(ConfigError) as info:
        compose_config(["exp_name=x", "lr=-1", "batch_size=0"])
    assert {field for field, _ in info.value.problems} == {"lr", "batch_size"}


def test_field_prefix_names_a_value_as_its_caller_wrote_it():
    with pytest.raises(ConfigError) as info:
        build_config(["model=tiny"], {"exp_name": "x", "loss.beta": -1.0}, field_prefix="overrides")
    assert [field for field, _ in info.value.problems] == ["overrides.loss.beta"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dpo_lib", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_train_cli_config_error_exits_2_naming_the_key_without_traceback():
    proc = run_cli("train", "exp_name=x", "lr=-1")
    assert proc.returncode == 2, proc.stderr
    assert "config error" in proc.stderr and "lr: Input should be greater than 0" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_train_cli_print_config_prints_the_resolved_config():
    proc = run_cli("train", "exp_name=x", "loss=hinge", "--print-config")
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)
    assert config["loss"] == {"name": "hinge", "beta": 0.1}
    assert config["run_dir"] == "artifacts/runs/x"
    assert TrainConfig.model_validate(config).loss.name == "hinge"
