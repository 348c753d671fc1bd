"""The champion gate both ways, on a real MLflow registry (SQLite) with stub numbers from compare.

``promote`` is the real task body: it reads the run's spec, publish.json and compare's comparison.json,
moves (or keeps) the ``champion`` alias and records the decision. The models' evaluation is not the
point here, so compare's output is written by the test.
"""

import json
from pathlib import Path

import pytest

from dpo_lib.io import atomic_write_json
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.orchestration.runs import record_run
from dpo_lib.results.gate import decide
from dpo_lib.results.promote import promote
from tests.support.settings_under import settings_under

NAME = "gate"


@pytest.mark.parametrize(
    ("metric", "min_delta", "challenger", "champion", "decision"),
    [
        ("rewards/accuracies", 0.0, 0.9, None, "first"),
        ("rewards/accuracies", 0.0, 0.9, 0.8, "promoted"),
        ("rewards/accuracies", 0.0, 0.8, 0.8, "kept"),  # a tie is no win
        ("rewards/accuracies", 0.0, 0.7, 0.8, "kept"),
        ("rewards/accuracies", 0.05, 0.83, 0.8, "kept"),  # better, by less than min_delta
        ("rewards/accuracies", 0.05, 0.85, 0.8, "promoted"),
        ("loss", 0.0, 0.4, 0.5, "promoted"),  # lower is better
        ("loss", 0.0, 0.6, 0.5, "kept"),
        ("loss", 0.0, float("nan"), 0.5, "kept"),
        ("loss", 0.0, 0.6, float("nan"), "promoted"),
    ],
)
def test_decide(metric, min_delta, challenger, champion, decision):
    verdict = decide(metric, min_delta, challenger, champion)
    assert verdict.decision == decision
    assert metric in verdict.reason


@pytest.fixture
def make_run(tmp_path, client, store):
    """``make_run(challenger_metrics, champion_version, champion_metrics, promotion=...)``: a DAG run's spec,
    a registered version for it with its MLflow run, its publish.json, and compare's comparison.json."""
    experiment = client.create_experiment(NAME, artifact_location=store.artifact_location)
    count = iter(range(1, 100))

    def make(challenger, champion_version=None, champion=None, *, promotion=None, not_compared=None):
        n = next(count)
        settings = settings_under(tmp_path / f"run{n}")
        conf = {"exp_name": NAME, **({"promotion": promotion} if promotion else {})}
        spec = plan_run(conf, dag_id="dpo_finetune", run_id=f"manual__{n}", settings=settings)
        spec.write()
        record_run(spec)  # what validate records: the report finds the run folder by it
        run_id = client.create_run(experiment).info.run_id
        version = register(client, run_id)
        atomic_write_json(spec.run_dir / "publish.json",
                          {"registered_model_name": NAME, "version": version, "mlflow_run_id": run_id,
                           "output_uri": f"{settings.local_storage_root / 'out' / str(n)}/"})  # fmt: skip
        atomic_write_json(spec.run_dir / "comparison.json",
                          {"challenger": challenger, "champion": champion, "champion_version": champion_version,
                           "not_compared": not_compared, "n_pairs": 20})  # fmt: skip
        return spec, version, run_id

    return make


def promote_run(spec):
    """The promote task body, with the settings of the folder make_run put the run in."""
    return promote(spec.path, settings=settings_under(spec.run_dir.parents[2]))


def register(client, run_id):
    try:
        client.create_registered_model(NAME)
    except Exception:
        pass
    return str(client.create_model_version(NAME, f"gs://bucket/runs/{run_id}/final", run_id=run_id).version)


def champion(client):
    version = client.get_registered_model(NAME).aliases.get("champion")
    return None if version is None else str(version)


def test_the_first_model_becomes_champion(client, make_run):
    spec, version, run_id = make_run({"rewards/accuracies": 0.7, "loss": 0.6})
    promotion = promote_run(spec)
    assert promotion["decision"] == "first" and promotion["champion"] is None
    assert champion(client) == version == "1"
    assert json.loads((spec.run_dir / "promotion.json").read_text()) == promotion
    assert client.get_run(run_id).data.tags["dpo.promotion.decision"] == "first"


def test_a_challenger_that_wins_takes_the_alias(client, make_run):
    first, _, _ = make_run({"rewards/accuracies": 0.7})
    promote_run(first)
    spec, version, run_id = make_run({"rewards/accuracies": 0.95, "loss": 0.3}, "1", {"rewards/accuracies": 0.8})
    promotion = promote_run(spec)
    assert promotion["decision"] == "promoted"
    assert champion(client) == version == "2"
    assert (promotion["challenger"]["value"], promotion["champion"]["value"]) == (0.95, 0.8)
    assert promotion["versions"] == {"challenger": "2", "champion": "1"}
    assert client.get_model_version(NAME, "2").tags["dpo.promotion.decision"] == "promoted"
    tags = client.get_run(run_id).data.tags
    assert (tags["dpo.promotion.challenger"], tags["dpo.promotion.champion"]) == ("0.95", "0.8")


def test_a_challenger_that_loses_is_registered_and_the_champion_kept(client, make_run):
    first, _, _ = make_run({"rewards/accuracies": 0.9})
    promote_run(first)
    spec, version, _ = make_run({"rewards/accuracies": 0.6}, "1", {"rewards/accuracies": 0.9})
    promotion = promote_run(spec)
    assert promotion["decision"] == "kept" and "worse by 0.3000" in promotion["reason"]
    assert champion(client) == "1"
    assert client.get_model_version(NAME, version).tags["dpo.promotion.decision"] == "kept"  # still registered
    assert promote_run(spec) == promotion  # a retry returns the recorded decision


def test_loss_is_better_lower_and_min_delta_is_the_least_gain(client, make_run):
    gate = {"metric": "loss", "min_delta": 0.05}
    first, _, _ = make_run({"loss": 0.5}, promotion=gate)
    promote_run(first)
    small, _, _ = make_run({"loss": 0.47}, "1", {"loss": 0.5}, promotion=gate)
    assert promote_run(small)["decision"] == "kept"
    big, version, _ = make_run({"loss": 0.4}, "1", {"loss": 0.5}, promotion=gate)
    assert promote_run(big)["decision"] == "promoted" and champion(client) == version


def test_no_promotion_when_the_alias_moved_during_the_comparison(client, make_run):
    first, _, _ = make_run({"rewards/accuracies": 0.5})
    promote_run(first)
    racer, _, _ = make_run({"rewards/accuracies": 0.9}, "1", {"rewards/accuracies": 0.5})
    late, _, _ = make_run({"rewards/accuracies": 0.95}, "1", {"rewards/accuracies": 0.5})  # compared with v1 too
    assert promote_run(racer)["decision"] == "promoted"
    promotion = promote_run(late)
    assert promotion["decision"] == "kept" and "moved to version 2" in promotion["reason"]
    assert champion(client) == "2"


def test_a_champion_that_could_not_be_evaluated_is_kept(client, make_run):
    first, _, _ = make_run({"rewards/accuracies": 0.5})
    promote_run(first)
    spec, _, _ = make_run({"rewards/accuracies": 0.9}, "1", None, not_compared="its stored copy cannot be read")
    promotion = promote_run(spec)
    assert promotion["decision"] == "kept" and "cannot be read" in promotion["reason"]
    assert promotion["champion"] == {"version": "1", "value": None, "metrics": None}
    assert champion(client) == "1"


def test_the_report_with_the_decision_is_written_and_stored_beside_the_model(client, make_run, monkeypatch):
    import dpo_lib.results.promote as promote_module
    from dpo_lib.storage.interface import StorageError

    first, _, _ = make_run({"rewards/accuracies": 0.9})
    promote_run(first)
    spec, _, _ = make_run({"rewards/accuracies": 0.6}, "1", {"rewards/accuracies": 0.9})

    def storage_down(*args, **kwargs):
        raise StorageError("gs://bucket/x", "unreachable")

    monkeypatch.setattr(promote_module, "store_report", storage_down)
    with pytest.raises(StorageError):
        promote_run(spec)  # the decision is made and recorded; Airflow retries the try
    assert json.loads((spec.run_dir / "promotion.json").read_text())["decision"] == "kept"
    monkeypatch.undo()
    promotion = promote_run(spec)  # the retry stores the report without deciding again
    assert promotion["decision"] == "kept" and champion(client) == "1"

    page = (spec.run_dir / "report.html").read_text()
    assert 'id="promotion"' in page and "kept" in page and "worse by 0.3000" in page
    assert 'id="snapshot"' in page and "http://localhost:8080/dags/dpo_finetune/runs/manual__" in page
    assert 'id="run-state"' not in page  # the run is still going when promote makes its copy: no state to show
    out = json.loads((spec.run_dir / "publish.json").read_text())["output_uri"]
    marker = json.loads((Path(out) / "report" / "upload.json").read_text())
    assert {entry["path"] for entry in marker["files"]} == {"report.html", "promotion.json"}  # no samples.json here
    assert (Path(out) / "report" / "report.html").read_text() == page
