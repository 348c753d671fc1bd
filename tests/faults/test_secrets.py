"""Credentials planted in the environment (the Firebase service account, an Airflow Connection, tokens) appear
nowhere a run writes or prints: not in the output of the train, evaluate and validate commands, not in the task
functions' logs, not in the run spec, config.json, metrics.json or manifest.json, not in any file of the run. A
request that tries to pull one into the training config (``${oc.env:...}``) is refused without it being resolved.
(Task logs, rendered templates and XComs in Airflow itself are checked with the services.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_lib.dag.runners import command_args, local_command
from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import tasks
from dpo_lib.settings import Settings
from dpo_lib.spec import RunSpec, SpecError
from tests.faults.planted_secrets import CREDENTIALS, MARKER

pytestmark = pytest.mark.faults

SECRETS = {**CREDENTIALS, "AIRFLOW__API_AUTH__JWT_SECRET": MARKER, "WANDB_API_KEY": MARKER}
CONF = {
    "dataset_uri": "data/prefs.json",
    "exp_name": "secrets",
    "overrides": {
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
    """The local runner's way: the task's command line through bash, in the work directory; stdout + stderr."""
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


def test_planted_secrets_appear_in_no_output_file_log_or_spec_of_a_local_run(deployment, caplog, capsys):
    caplog.set_level("DEBUG")
    spec_path = tasks.validate(CONF, dag_id="dpo_finetune", run_id="manual__secrets")  # validate's XCom
    spec_text = spec_path.read_text()
    spec = RunSpec.read(spec_path)
    manifest = tasks.stage(spec_path)
    outputs = [
        run_command(local_command(deployment.python, command_args("train", str(spec_path))), deployment.workdir),
        run_command(local_command(deployment.python, command_args("evaluate", str(spec_path))), deployment.workdir),
        run_command(f"{sys.executable} -m dpo_lib validate {spec.dataset_path} --json", deployment.workdir),
    ]
    run_dir = spec.run_dir
    files = files_holding_the_secret(run_dir, deployment.staging_root)  # before cleanup removes staging
    tasks.cleanup(spec_path)

    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == 2
    assert (run_dir / "config.json").exists() and not spec_path.exists()
    assert files == []
    assert MARKER not in str(spec_path) and MARKER not in spec_text and MARKER not in json.dumps(manifest)
    for output in outputs:
        assert MARKER not in output
    assert MARKER not in caplog.text
    captured = capsys.readouterr()
    assert MARKER not in captured.out + captured.err


@pytest.mark.parametrize("key", ["trainer.attn_implementation", "model.name", "truncation_mode"])
def test_a_request_pulling_the_environment_into_the_config_is_refused_unresolved(deployment, caplog, key):
    caplog.set_level("DEBUG")
    conf = {**CONF, "overrides": {**CONF["overrides"], key: "${oc.env:FIREBASE_CREDENTIALS_JSON}"}}
    with pytest.raises(SpecError) as info:
        tasks.validate(conf, dag_id="dpo_finetune", run_id="manual__interpolate")
    assert [field for field, _ in info.value.problems] == [f"overrides.{key}"]
    assert MARKER not in str(info.value) and MARKER not in caplog.text
    assert not deployment.staging_root.exists() or not any(deployment.staging_root.rglob("*"))  # nothing written


@pytest.mark.parametrize("source", ["FIREBASE_CREDENTIALS_JSON", "DPO_FIREBASE_CONN_ID"])
def test_a_rejected_credential_is_named_by_its_source_never_quoted(deployment, monkeypatch, caplog, source):
    caplog.set_level("DEBUG")
    if source == "DPO_FIREBASE_CONN_ID":  # the same key, kept in an Airflow Connection instead
        monkeypatch.delenv("FIREBASE_CREDENTIALS_JSON")
        monkeypatch.setenv("DPO_FIREBASE_CONN_ID", "dpo_firebase")

    conf = {**CONF, "dataset_uri": "gs://dpo-faults-bucket/prefs.json"}
    spec_path = tasks.validate(conf, dag_id="dpo_finetune", run_id=f"manual__{source}")
    with pytest.raises(SpecError) as info:  # the stage task fails at once: retrying cannot fix a bad key
        tasks.stage(spec_path)

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
