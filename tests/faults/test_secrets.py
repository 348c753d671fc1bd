"""Credentials planted in the environment (the Firebase service account, an Airflow Connection, tokens) appear
nowhere a run writes or prints: not in the output of the train, evaluate and validate commands, not in the task
functions' logs, not in the run plan (XCom), not in config.json, metrics.json or manifest.json, not in any
file of the run. A request that tries to pull one into the training config (``${oc.env:...}``) gets the literal
text instead. (Task logs, rendered templates and XComs in Airflow itself are checked with the services.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dpo_lib.orchestration.request import RequestError

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import tasks
from dpo_lib.orchestration.staging import check_dataset
from dpo_lib.settings import Settings
from tests.faults.planted_secrets import CREDENTIALS, MARKER

pytestmark = pytest.mark.faults

SECRETS = {**CREDENTIALS, "AIRFLOW__API_AUTH__JWT_SECRET": MARKER, "WANDB_API_KEY": MARKER}
# Tries to interpolate the worker's environment into the training config, and so into config.json and the logs.
CONF = {
    "dataset_uri": "data/prefs.json",
    "exp_name": "secrets",
    "overrides": {
        "model.name": "${oc.env:FIREBASE_CREDENTIALS_JSON}",
        "max_steps": 2,
        "batch_size": 4,
        "checkpoint_every": 1,
        "log_every": 1,
        "eval_every": 0,
        "trainer.device": "cpu",
    },  # fmt: skip
}


@pytest.fixture
def deployment(tmp_path, tiny_model_dir, monkeypatch):
    """A worker's folders and environment (the DPO_* settings and the planted secrets), as Airflow would run it."""
    workdir = tmp_path / "workdir"
    (workdir / "models").mkdir(parents=True)
    (workdir / "models" / "tiny").symlink_to(tiny_model_dir)  # configs/model/tiny.yaml: models/tiny
    (workdir / "data").mkdir()
    (workdir / "data" / "prefs.json").write_text(json.dumps(make_toy_pairs(60, seed=2)))
    env = {
        "DPO_WORKDIR": str(workdir),
        "DPO_STAGING_ROOT": str(tmp_path / "staging"),
        "DPO_ARTIFACTS_ROOT": str(tmp_path / "artifacts"),
        "DPO_RUNNER": "local",
        "DPO_PYTHON": sys.executable,
        **SECRETS,
    }
    for name in ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "DPO_FIREBASE_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env()


def run_command(command: str, cwd: Path) -> str:
    """The local runner's way: the planned command line through bash, in the work directory; stdout + stderr."""
    proc = subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return output


def files_holding_the_secret(*roots: Path) -> list[str]:
    return sorted(
        str(path)
        for root in roots
        for path in root.rglob("*")
        if path.is_file() and MARKER.encode() in path.read_bytes()
    )


def test_planted_secrets_appear_in_no_output_file_log_or_plan_of_a_local_run(deployment, caplog, capsys):
    caplog.set_level("DEBUG")
    plan = tasks.validate(CONF, dag_id="dpo_finetune", run_id="manual__secrets")
    manifest = tasks.stage(plan)
    outputs = [
        run_command(plan["train_command"], deployment.workdir),
        run_command(plan["evaluate_command"], deployment.workdir),
        run_command(f"{sys.executable} -m dpo_lib validate {plan['staged_path']} --json", deployment.workdir),
    ]
    run_dir = Path(plan["run_dir"])
    config = json.loads((run_dir / "config.json").read_text())
    files = files_holding_the_secret(run_dir, deployment.staging_root)  # before cleanup removes staging
    tasks.cleanup(plan)

    assert config["model"]["name"] == "${oc.env:FIREBASE_CREDENTIALS_JSON}"  # the literal text, not the secret
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == 2
    assert files == []
    assert MARKER not in json.dumps(plan) and MARKER not in json.dumps(manifest)
    for output in outputs:
        assert MARKER not in output
    assert MARKER not in caplog.text
    captured = capsys.readouterr()
    assert MARKER not in captured.out + captured.err


@pytest.mark.parametrize("source", ["FIREBASE_CREDENTIALS_JSON", "DPO_FIREBASE_CONN_ID"])
def test_a_rejected_credential_is_named_by_its_source_never_quoted(deployment, monkeypatch, caplog, source):
    caplog.set_level("DEBUG")
    if source == "DPO_FIREBASE_CONN_ID":  # the same key, kept in an Airflow Connection instead
        monkeypatch.delenv("FIREBASE_CREDENTIALS_JSON")
        monkeypatch.setenv("DPO_FIREBASE_CONN_ID", "dpo_firebase")

    with pytest.raises(RequestError) as info:
        check_dataset("gs://dpo-faults-bucket/prefs.json", deployment)

    assert source in str(info.value) and "invalid service-account key" in str(info.value)
    assert MARKER not in str(info.value) and MARKER not in caplog.text
    chained = info.value.__cause__ or info.value.__context__
    assert chained is None or MARKER not in repr(chained)


def test_the_validate_command_reports_a_rejected_credential_without_quoting_it(deployment):
    proc = subprocess.run([sys.executable, "-m", "dpo_lib", "validate", "gs://dpo-faults-bucket/prefs.json"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "env FIREBASE_CREDENTIALS_JSON holds an invalid service-account key" in proc.stderr
    assert MARKER not in proc.stdout + proc.stderr
