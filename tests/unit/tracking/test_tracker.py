"""The tracker on a real MLflow store (SQLite): one MLflow run per training run, resumed runs included, and an
unreachable MLflow that costs the caller nothing and is filled from the history afterwards."""

import json
import time

from dpo_lib.tracking import RunTracker
from dpo_lib.tracking.lineage import Lineage
from dpo_lib.tracking.sync import sync_run
from dpo_lib.tracking.target import TrackingTarget
from tests.support.storage_emulator import free_port


def lineage(run_dir) -> Lineage:
    return Lineage(exp_name="unit", run_dir=str(run_dir), trainer="basic", adapter="none", loss="dpo",
                   base_model="tiny", base_model_path="models/tiny", datasets={"toy": ("data/toy.json", None)})  # fmt: skip


def losses(client, run_id):
    return [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]


def test_a_resumed_run_continues_its_mlflow_run_and_logs_each_step_once(store, client, tmp_path):
    run_dir = tmp_path / "run"
    first = RunTracker(run_dir, target=store, lineage=lineage(run_dir), params={"lr": "0.1", "max_steps": "4"})
    first.start(resume_step=0)
    for step in (1, 2, 3, 4):
        first.log("train", step, {"loss": 1.0 / step, "lr": 0.1})
    first.close(failed=True)  # killed after step 4, its newest checkpoint at step 2
    run_id = json.loads((run_dir / "tracking.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "FAILED"

    resumed = RunTracker(run_dir, target=store, lineage=lineage(run_dir), params={"lr": "0.1", "max_steps": "6"})
    resumed.start(resume_step=2)
    assert [e["step"] for e in resumed.history.read()] == [1, 2]  # steps 3 and 4 are logged again
    for step in (3, 4, 5, 6):
        resumed.log("train", step, {"loss": 1.0 / step, "lr": 0.1})
    resumed.close()

    assert json.loads((run_dir / "tracking.json").read_text())["run_id"] == run_id
    assert [step for step, _ in losses(client, run_id)] == [1, 2, 3, 4, 5, 6]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["max_steps"] == "4"
    assert run.data.tags["dpo.changed_on_resume"] == "max_steps"
    assert run.data.tags["dpo.dataset_uri"] == "data/toy.json" and run.data.tags["dpo.base_model"] == "tiny"


def test_an_unreachable_mlflow_costs_the_caller_nothing_and_a_sync_fills_it_later(store, client, tmp_path):
    run_dir = tmp_path / "run"
    down = TrackingTarget(uri=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    tracker = RunTracker(run_dir, target=down, lineage=lineage(run_dir), params={"lr": "0.1"}, retry_s=0.2)
    tracker.start()
    spent = []
    for step in range(1, 51):
        started = time.perf_counter()
        tracker.log("train", step, {"loss": 1.0 / step})
        spent.append(time.perf_counter() - started)
    started = time.perf_counter()
    tracker.close()
    assert time.perf_counter() - started < 10 and max(spent) < 0.25, (max(spent), time.perf_counter() - started)
    assert not tracker.synced and not (run_dir / "tracking.json").exists()
    (run_dir / "config.json").write_text(json.dumps({  # what train wrote first: sync_run's params
        "exp_name": "unit", "model": {"name": "tiny", "name_or_path": "models/tiny"},
        "datasets": {"toy": {"uri": "data/toy.json"}}}))  # fmt: skip

    run = sync_run(run_dir, target=store)
    assert [step for step, _ in losses(client, run.run_id)] == list(range(1, 51))
    assert json.loads((run_dir / "tracking.json").read_text())["synced"] is True
    assert client.get_run(run.run_id).data.params["max_steps"] == "120"  # the config's, flattened
