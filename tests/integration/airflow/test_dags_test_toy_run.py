"""End to end: ``airflow dags test dpo_finetune`` on SQLite trains the tiny model for real."""

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.dags_test import airflow_env, make_toy_inputs, migrate
from tests.support.dags_test import dags_test as run_dags_test

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    make_toy_inputs(work)
    migrate(airflow_env(work))
    return work


def dags_test(work: Path, conf: dict) -> subprocess.CompletedProcess:
    return run_dags_test(airflow_env(work), conf)


def staged_files(work: Path) -> list[Path]:
    return [p for p in (work / "staging").rglob("*") if p.is_file()]


def trained_files(folder: Path) -> list[Path]:
    """What training writes in a run folder: its config, checkpoints, final model, metrics."""
    names = {"config.json", "checkpoints", "final", "metrics.json"}
    return [p for p in folder.rglob("*") if p.name in names] if folder.exists() else []


def test_toy_run_learns_and_leaves_nothing_staged(workdir):
    result = dags_test(workdir, {"dataset_uri": "data/dataset.json", "exp_name": "e2e"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    (metrics_path,) = (workdir / "artifacts" / "e2e").glob("*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    assert metrics["train"]["step"] == 120
    for name in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                 "logps/chosen", "logps/rejected", "grad_norm", "lr", "tokens_per_s"):  # fmt: skip
        assert name in metrics["train"]
        assert name == "grad_norm" or name == "lr" or name == "tokens_per_s" or name in metrics["eval"]
    assert metrics["eval"]["rewards/accuracies"] >= 0.80
    assert metrics["eval"]["logps/accuracies"] > metrics["eval"]["reference"]["logps/accuracies"]
    assert (metrics_path.parent / "final" / "model.safetensors").exists()
    assert staged_files(workdir) == []
    assert "made by <code>promote</code>" in (metrics_path.parent / "report.html").read_text()  # cleanup kept it
    # the run spec validate wrote was the one train read: config.json is its training config
    config = json.loads((metrics_path.parent / "config.json").read_text())
    assert config["datasets"]["from_uri"]["sha256"] is not None  # trusted from stage's manifest
    assert config["run_dir"] == str(metrics_path.parent)


def test_bad_dataset_fails_stage_and_never_trains(workdir):
    bad = workdir / "data" / "bad.json"
    bad.write_text(json.dumps([{"prompt": "p", "chosen": "same", "rejected": "same"}, {"prompt": "q", "chosen": 3}]))
    result = dags_test(workdir, {"dataset_uri": "data/bad.json", "exp_name": "bad-data"})
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "record 1" in output and "rejected" in output  # the reason, naming record and field
    assert "stage" in output
    assert "Callback failed" not in output  # the run's failure notifier ran (no dpo_notify Connection: no email)
    assert "failure notifications are off" in output
    assert trained_files(workdir / "artifacts" / "bad-data") == []  # validate's run.json, for the report, at most
    assert staged_files(workdir) == []  # cleanup ran: validate (a setup) had succeeded
    # and left the run's report, which says where the run stopped
    (report,) = (workdir / "artifacts" / "bad-data").glob("*/report.html")
    page = report.read_text()
    assert 'id="run-state">failed<' in page and "made by <code>cleanup</code>" in page
    assert '<code>stage</code></td><td><span class="state failed">failed</span>' in page
    assert '<code>train</code></td><td><span class="state upstream_failed">upstream_failed</span>' in page


def test_bad_training_config_fails_validate_naming_the_key(workdir):
    result = dags_test(workdir, {"dataset_uri": "data/dataset.json", "exp_name": "bad-conf", "overrides": {"lr": -1}})
    assert result.returncode != 0
    assert "overrides.lr: Input should be greater than 0" in result.stdout + result.stderr
    assert not (workdir / "artifacts" / "bad-conf").exists()
    assert staged_files(workdir) == []
