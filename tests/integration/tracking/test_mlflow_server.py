"""Training runs tracked by a real ``mlflow server`` on loopback: what a run logs there, and an outage.

The trainer is the real one (tiny model, toy data, CPU) and so is the tracker; the outage is the server
process stopped in the middle of the run and started again afterwards on the same database.
"""

from __future__ import annotations

import json
import time

import pytest

from dpo_lib.tracking import RunTracker, tracker_for
from dpo_lib.training.recipe import train

pytestmark = pytest.mark.slow


def client_of(server):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=server.uri, registry_uri=server.uri)


def steps(client, run_id: str, key: str) -> list[int]:
    return [metric.step for metric in client.get_metric_history(run_id, key)]


def test_a_run_logs_params_step_metrics_eval_metrics_and_lineage(tracking_to, make_config, tmp_path):
    from dpo_lib.tracking.sync import sync_quietly
    from dpo_lib.training.evaluate import evaluate

    config = make_config("max_steps=6", "log_every=2", "eval_every=3", run_dir=tmp_path / "run")
    train(config, tracker=tracker_for(config))
    tracking = json.loads((tmp_path / "run" / "tracking.json").read_text())
    assert tracking["tracking_uri"] == tracking_to.uri and tracking["synced"] is True
    assert (
        tracking["ui_url"] == f"{tracking_to.uri}/#/experiments/{tracking['experiment_id']}/runs/{tracking['run_id']}"
    )

    client = client_of(tracking_to)
    run = client.get_run(tracking["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["max_steps"] == "6" and params["loss.beta"] == str(config.loss.beta)
    assert params["model.name_or_path"] == config.model.name_or_path and params["trainer.name"] == "basic"
    run_id = run.info.run_id
    for name in ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "grad_norm", "lr", "tokens_per_s"):
        assert steps(client, run_id, f"train/{name}") == [2, 4, 6], name
    assert steps(client, run_id, "eval/rewards/accuracies") == [3, 6]
    logged = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert {e["step"]: e["metrics"]["loss"] for e in history if e["split"] == "train"} == pytest.approx(logged)
    tags = run.data.tags
    assert (tags["dpo.trainer"], tags["dpo.adapter"], tags["dpo.loss"]) == ("basic", "none", "dpo")
    assert tags["dpo.base_model"] == "tiny" and tags["dpo.base_model_path"] == config.model.name_or_path
    assert tags["dpo.dataset_uri"] == config.datasets["toy"].uri
    assert len(tags["dpo.git_commit"]) == 40 and tags["mlflow.source.git.commit"] == tags["dpo.git_commit"]

    # What `python -m dpo_lib evaluate --run-dir` adds: the held-out metrics, policy and reference.
    evaluate(config, tmp_path / "run" / "final")
    assert sync_quietly(tmp_path / "run")
    metrics = client.get_run(run_id).data.metrics
    held_out = json.loads((tmp_path / "run" / "metrics.json").read_text())["eval"]
    assert metrics["heldout/rewards/accuracies"] == pytest.approx(held_out["rewards/accuracies"])
    assert metrics["heldout/reference/logps/accuracies"] == pytest.approx(held_out["reference"]["logps/accuracies"])


class TimedTracker(RunTracker):
    """The real tracker, timing what each logging call costs the training loop; at ``stop_at`` (before that
    step's call is timed, once the earlier steps reached MLflow) the server is stopped."""

    def __init__(self, *args, server, stop_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.server, self.stop_at, self.spent = server, stop_at, []

    def log(self, split, step, metrics) -> None:
        if split == "train" and step == self.stop_at:
            deadline = time.monotonic() + 60  # let the first steps reach MLflow live, then cut it off
            while (self._run is None or not self._queue.empty()) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.server.stop()
        started = time.perf_counter()
        super().log(split, step, metrics)
        self.spent.append(time.perf_counter() - started)

    def close(self, failed: bool = False) -> None:
        started = time.perf_counter()
        super().close(failed)
        self.close_s = time.perf_counter() - started


def test_an_outage_neither_fails_nor_slows_training_and_the_sync_fills_mlflow_after(tracking_to, make_config,
                                                                                      tmp_path):  # fmt: skip
    from dpo_lib.tracking.sync import sync_run

    config = make_config("max_steps=12", "log_every=1", run_dir=tmp_path / "run")
    made = tracker_for(config)
    tracker = TimedTracker(config.run_dir, target=made.target, lineage=made.lineage, params=made.params,
                           server=tracking_to, stop_at=6, retry_s=1.0)  # fmt: skip
    started = time.perf_counter()
    train(config, tracker=tracker)
    assert (tmp_path / "run" / "final" / "model.safetensors").exists()  # training went on and finished

    # The training loop never waited for MLflow: a logging call is a file append and a queue put.
    assert len(tracker.spent) == 12 and max(tracker.spent) < 0.25 and sum(tracker.spent) < 1.0, tracker.spent
    # The end-of-run sync gave up at once against a server that is down (connection refused).
    assert tracker.close_s < 15, tracker.close_s
    print(f"train with an outage: {time.perf_counter() - started:.1f} s, close {tracker.close_s:.2f} s")
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [e["step"] for e in history] == list(range(1, 13))  # the local copy is whole
    tracking = json.loads((tmp_path / "run" / "tracking.json").read_text())
    assert tracking["synced"] is False

    tracking_to.start()  # the server is back, on the same database
    client = client_of(tracking_to)
    before = steps(client, tracking["run_id"], "train/loss")
    assert before and len(before) < 12 and before == sorted(set(before))  # what reached it live, once each
    sync_run(tmp_path / "run")  # what publish (or `python -m dpo_lib.tracking.sync`) does
    assert steps(client, tracking["run_id"], "train/loss") == list(range(1, 13))  # filled, nothing twice
    assert json.loads((tmp_path / "run" / "tracking.json").read_text())["synced"] is True
    sync_run(tmp_path / "run")  # and again: idempotent
    assert steps(client, tracking["run_id"], "train/loss") == list(range(1, 13))
    assert client.get_run(tracking["run_id"]).info.status == "FINISHED"
