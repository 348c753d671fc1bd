"""End to end, twice: ``airflow dags test dpo_finetune`` on SQLite with the embedded MLflow default (no server).

The first run's model is stored (upload.json last) with its report (report/), registered as version 1 and becomes the champion
(``first``); the second run is compared with it on its own held-out pairs and its decision is recorded
against version 1, whichever way it goes. Everything lives in a temporary workdir.
"""

import json
from pathlib import Path

import pytest

from dpo_lib.io import digest_file
from tests.support.dags_test import airflow_env, dags_test, make_toy_inputs, migrate

pytestmark = pytest.mark.slow
CONF = {"dataset_uri": "data/dataset.json", "exp_name": "gate",
        "overrides": {"max_steps": 20, "log_every": 5, "eval_every": 10, "checkpoint_every": 0}}  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the same conf, one after the other: their run folders, and the output of the second."""
    work = tmp_path_factory.mktemp("results")
    make_toy_inputs(work)
    env = airflow_env(work)
    migrate(env)
    outputs = []
    for _ in range(2):
        result = dags_test(env, CONF, timeout=900)
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
        outputs.append(result.stdout + result.stderr)
    folders = sorted((work / "artifacts" / "gate").iterdir(), key=lambda p: read(p / "publish.json")["published_at"])
    assert len(folders) == 2
    return work, folders, outputs


def read(path: Path):
    return json.loads(path.read_text())


def mlflow_client(work: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{work / 'artifacts' / '_mlflow' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_the_first_model_is_stored_registered_and_becomes_champion(runs):
    work, (first, _), outputs = runs
    promotion = read(first / "promotion.json")
    assert promotion["decision"] == "first" and promotion["champion"] is None
    assert promotion["versions"] == {"challenger": "1", "champion": None}
    assert "promotion: first" in outputs[0]
    published = read(first / "publish.json")
    out = Path(published["output_uri"])
    assert out == work / "runs" / "gate" / first.name  # runs/<exp_name>/<run_id>/ beside the local dataset
    marker = read(out / "upload.json")
    listed = {entry["path"]: entry for entry in marker["files"]}
    for rel in ("final/model.safetensors", "final/README.md", "metrics.json", "history.jsonl", "tracking.json"):
        digest = digest_file(first / rel)
        assert (listed[rel]["size"], listed[rel]["md5"]) == (digest.size, digest.md5), rel
        assert (out / rel).read_bytes() == (first / rel).read_bytes()
    report = read(out / "report" / "upload.json")  # the report, stored by promote with its own marker
    assert {entry["path"] for entry in report["files"]} >= {"report.html", "promotion.json", "samples.json"}
    page = (out / "report" / "report.html").read_text()
    assert page == (first / "report.html").read_text() and 'id="promotion"' in page and "<svg" in page

    client = mlflow_client(work)
    version = client.get_model_version_by_alias("gate", "champion")
    assert str(version.version) == "1" and version.tags["dpo.output_uri"] == published["output_uri"]
    assert version.source == published["output_uri"] + "final"
    assert version.tags["dpo.promotion.decision"] == "first"


def test_the_mlflow_run_holds_params_metrics_and_lineage(runs):
    work, (first, _), _ = runs
    tracking = read(first / "tracking.json")
    assert tracking["tracking_uri"] == f"sqlite:///{work / 'artifacts' / '_mlflow' / 'mlflow.db'}"
    assert tracking["synced"] is True
    run = mlflow_client(work).get_run(tracking["run_id"])
    client = mlflow_client(work)
    assert run.data.params["max_steps"] == "20" and run.data.params["loss.name"] == "dpo"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [5, 10, 15, 20]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/rewards/accuracies")] == [10, 20]
    assert run.data.metrics["heldout/rewards/accuracies"] == read(first / "metrics.json")["eval"]["rewards/accuracies"]
    tags = run.data.tags
    assert tags["dpo.dag_id"] == "dpo_finetune" and tags["dpo.run_id"].startswith("manual__")
    assert tags["dpo.dataset_uri"] == "data/dataset.json"
    staged = read(first / "config.json")["datasets"]["from_uri"]["sha256"]  # stage's digest of the dataset
    assert tags["dpo.dataset_sha256"] == staged and len(staged) == 64
    assert tags["dpo.base_model"] == "tiny" and tags["dpo.trainer"] == "basic" and tags["dpo.adapter"] == "none"
    assert tags["dpo.promotion.decision"] == "first"
    history = [json.loads(line) for line in (first / "history.jsonl").read_text().splitlines()]
    assert [(e["split"], e["step"]) for e in history] == [
        ("train", 5), ("train", 10), ("eval", 10), ("train", 15), ("train", 20), ("eval", 20)]  # fmt: skip


def test_the_second_run_is_judged_against_the_first(runs):
    work, (first, second), outputs = runs
    promotion = read(second / "promotion.json")
    assert promotion["versions"] == {"challenger": "2", "champion": "1"}
    assert promotion["decision"] in ("promoted", "kept")
    challenger, champion = promotion["challenger"]["value"], promotion["champion"]["value"]
    assert isinstance(challenger, float) and isinstance(champion, float)
    assert promotion["metric"] == "rewards/accuracies" and promotion["n_pairs"] > 0
    assert f"promotion: {promotion['decision']}" in outputs[1]
    alias = str(mlflow_client(work).get_model_version_by_alias("gate", "champion").version)
    assert alias == ("2" if promotion["decision"] == "promoted" else "1")

    samples = read(second / "samples.json")
    assert len(samples) == 4
    for row in samples:
        assert set(row) == {"prompt", "reference", "champion", "policy"}
        assert all(isinstance(row[k], str) for k in row)
    assert all(row["champion"] is None for row in read(first / "samples.json"))
