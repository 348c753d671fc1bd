"""Config composition (Hydra over configs/) and validation (configs/schemas/) in dpo_lib/config.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_lib.config import CONFIG_DIR, ConfigError, compose_config

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_defaults_compose_to_the_tiny_model_dpo_and_toy_data():
    cfg = compose_config(["exp_name=demo"])
    assert cfg["exp_name"] == "demo"
    assert cfg["run_dir"] == "artifacts/runs/demo"  # interpolated from exp_name
    assert cfg["model"] == {"name": "tiny", "name_or_path": "models/tiny", "tokenizer_name_or_path": None}
    assert cfg["loss"] == {"name": "dpo", "beta": 0.1, "label_smoothing": 0.0}
    assert {k: cfg["trainer"][k] for k in ("name", "device", "precision")} == {
        "name": "basic",
        "device": "auto",
        "precision": "auto",
    }
    assert list(cfg["datasets"]) == ["toy"]
    assert cfg["datasets"]["toy"]["uri"] == "data/dataset.json"
    assert (cfg["lr"], cfg["max_steps"], cfg["batch_size"]) == (5.0e-4, 120, 8)
    assert "defaults" not in cfg


def test_overrides_replace_values_groups_and_group_keys(tmp_path):
    cfg = compose_config(
        [
            "exp_name=demo",
            "lr=1e-4",
            "max_steps=200",
            "checkpoint_every=20",
            f"run_dir={tmp_path}",
            "loss=ipo",
            "loss.beta=0.2",
            "datasets=[toy]",
        ]
    )
    assert cfg["lr"] == pytest.approx(1e-4)
    assert isinstance(cfg["lr"], float)
    assert cfg["max_steps"] == 200 and isinstance(cfg["max_steps"], int)
    assert cfg["checkpoint_every"] == 20
    assert cfg["run_dir"] == str(tmp_path)
    assert cfg["loss"] == {"name": "ipo", "beta": 0.2}  # ipo.yaml has no label_smoothing
    assert list(cfg["datasets"]) == ["toy"]


def test_sft_loss_needs_no_beta():
    assert compose_config(["exp_name=demo", "loss=sft"])["loss"] == {"name": "sft"}


def test_composed_config_is_plain_json():
    cfg = compose_config(["exp_name=demo"])
    assert json.loads(json.dumps(cfg)) == cfg


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ([], "exp_name", "a value is required"),
        (["exp_name=x", "lr=-1"], "lr", "less than or equal to the minimum of 0"),
        (["exp_name=x", "lr=abc"], "lr", "is not of type 'number'"),
        (["exp_name=x", "foo=1"], "foo", "not a config key"),
        (["exp_name=x", "loss.foo=1"], "loss.foo", "not a config key"),
        (["exp_name=x", "+foo=1"], "foo", "was unexpected"),
        (
            ["exp_name=x", "loss=nope"],
            "loss/nope",
            "available 'loss' options: dpo, hinge, ipo, reference_free, sft",
        ),
        (["exp_name=a/b"], "exp_name", "is not allowed"),
        (["exp_name=.."], "exp_name", "is not allowed"),
        (["exp_name=../escape"], "exp_name", "is not allowed"),
        (["exp_name=x", "loss.beta=0"], "loss.beta", "less than or equal to the minimum of 0"),
        (["exp_name=x", "loss.label_smoothing=0.5"], "loss.label_smoothing", "maximum"),
        (
            ["exp_name=x", "max_prompt_length=128"],
            "max_prompt_length",
            "must be smaller than max_length (128)",
        ),
        (["exp_name=x", "max_length=64"], "max_prompt_length", "must be smaller than max_length (64)"),
        (
            ["exp_name=x", "trainer.device=tpu"],
            "trainer.device",
            "'tpu' is not one of ['auto', 'cpu', 'cuda']",
        ),
        (["exp_name=x", "max_steps=0"], "max_steps", "less than the minimum of 1"),
        (["exp_name=x", "truncation_mode=middle"], "truncation_mode", "is not one of"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_config_errors_name_the_key_and_the_reason(overrides, key, reason):
    with pytest.raises(ConfigError) as info:
        compose_config(overrides)
    message = str(info.value)
    assert key in message
    assert reason in message
    assert "Config search path" not in message


@pytest.mark.parametrize("key", ["max_length", "log_every", "seed", "gradient_accumulation_steps", "eval_batch_size"])
def test_deleting_a_key_the_trainer_reads_is_a_config_error(key):
    # the trainer indexes these directly: without them it would fail only after loading the model
    with pytest.raises(ConfigError, match=f"'{key}' is a required property"):
        compose_config(["exp_name=x", f"~{key}"])


def test_schema_requires_every_key_of_the_root_config():
    schema = json.loads((CONFIG_DIR / "schemas" / "config.schema.json").read_text())
    cfg = compose_config(["exp_name=x"])
    assert set(schema["required"]) == set(schema["properties"]) == set(cfg)


def test_config_errors_list_every_violation_at_once():
    with pytest.raises(ConfigError) as info:
        compose_config(["exp_name=x", "lr=-1", "batch_size=0"])
    assert "lr:" in str(info.value) and "batch_size:" in str(info.value)


def test_train_cli_config_error_exits_2_naming_the_key_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_lib", "train", "exp_name=x", "lr=-1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "config error" in proc.stderr
    assert "lr: -1 is less than or equal to the minimum of 0" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_train_cli_print_config_prints_the_resolved_config():
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_lib", "train", "exp_name=x", "loss=hinge", "--print-config"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads(proc.stdout)
    assert cfg["loss"] == {"name": "hinge", "beta": 0.1}
    assert cfg["run_dir"] == "artifacts/runs/x"
