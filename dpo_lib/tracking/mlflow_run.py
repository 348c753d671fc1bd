"""Every MLflow call of the tracking package, and only here: the client, one run's params, tags and metrics.

Logging is idempotent: a metric is logged only when MLflow has no value of it at that step, and a
param only when the run has none of that name, so any run folder can be replayed at any time.
The tracker's client fails fast (5 s a request, no retries); the tasks' client waits longer (30 s,
3 retries); MLflow's own ``MLFLOW_HTTP_REQUEST_*`` variables win.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from dpo_lib.tracking.history import make_event
from dpo_lib.tracking.record import TrackingRecord
from dpo_lib.tracking.target import TrackingTarget

log = logging.getLogger(__name__)

METRICS_PER_BATCH, PARAMS_PER_BATCH, TAGS_PER_BATCH = 900, 100, 100  # under MLflow's log_batch limits
# MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT: no "View run" lines on stdout, whose last line is a command's result.
_QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
_HTTP = {"fast": {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **_QUIET},
         "patient": {"MLFLOW_HTTP_REQUEST_TIMEOUT": "30", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", **_QUIET}}  # fmt: skip
_USER_SET = {name for name in _HTTP["fast"] if name in os.environ}


def make_client(target: TrackingTarget, *, patient: bool = False) -> Any:
    """An ``MlflowClient`` on ``target`` (tracking and registry), importing mlflow on first use."""
    for name, value in _HTTP["patient" if patient else "fast"].items():
        if name not in _USER_SET:
            os.environ[name] = value
    target.prepare()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=target.uri, registry_uri=os.environ.get("MLFLOW_REGISTRY_URI") or target.uri)


def is_missing(exc: BaseException) -> bool:
    """Whether ``exc`` is MLflow saying the thing asked for does not exist."""
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


class MlflowRun:
    """One MLflow run: where a training run's params, tags and metrics go."""

    def __init__(self, client: Any, target: TrackingTarget, record: TrackingRecord) -> None:
        self.client, self.target, self.record = client, target, record
        self._steps: dict[str, set[int]] = {}  # metric key -> steps MLflow holds

    @classmethod
    def open(cls, client: Any, target: TrackingTarget, *, experiment: str, run_name: str,
             previous: TrackingRecord | None = None) -> MlflowRun:  # fmt: skip
        """The run ``previous`` names when it is in this store, else a new run in ``experiment``."""
        if previous is not None and previous.tracking_uri == target.uri:
            try:
                run = client.get_run(previous.run_id)
            except Exception as exc:
                if not is_missing(exc):
                    raise
            else:
                if run.info.lifecycle_stage == "active":
                    if run.info.status != "RUNNING":
                        client.update_run(run.info.run_id, status="RUNNING")
                    return cls(client, target, previous)
        experiment_id = _experiment_id(client, target, experiment)
        run = client.create_run(experiment_id, run_name=run_name)
        record = TrackingRecord(tracking_uri=target.uri, experiment_id=experiment_id, experiment_name=experiment,
                                run_id=run.info.run_id, run_name=run_name,
                                ui_url=target.ui_url(experiment_id, run.info.run_id))  # fmt: skip
        return cls(client, target, record)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    # ---- params and tags ---------------------------------------------------------------------
    def log_params(self, params: Mapping[str, str]) -> None:
        """The params the run does not have yet; differing values of ones it has are named in a tag."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in params.items() if key not in existing]
        changed = sorted(key for key, value in params.items() if key in existing and existing[key] != value)
        for start in range(0, len(new), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=new[start : start + PARAMS_PER_BATCH], synchronous=True)
        if changed:
            self.set_tags({"dpo.changed_on_resume": ",".join(changed)})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, value) for key, value in tags.items()]
        for start in range(0, len(items), TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, tags=items[start : start + TAGS_PER_BATCH], synchronous=True)

    # ---- metrics -------------------------------------------------------------------------------
    def log_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Log the history events MLflow lacks (judged by each event's probe key at its step); returns how many."""
        from mlflow.entities import Metric

        metrics, logged = [], 0
        for event in events:
            values = {f"{event['split']}/{name}": value for name, value in event["metrics"].items()
                      if value is not None}  # fmt: skip
            if not values:
                continue
            probe = f"{event['split']}/loss" if f"{event['split']}/loss" in values else min(values)
            if event["step"] in self._logged_steps(probe):
                continue
            at = int(event["time"] * 1000)
            metrics += [Metric(key, float(value), at, event["step"]) for key, value in values.items()]
            logged += 1
            if len(metrics) >= METRICS_PER_BATCH:
                self._send(metrics)
                metrics = []
        if metrics:
            self._send(metrics)
        return logged

    def log_heldout(self, evaluation: Mapping[str, Any]) -> bool:
        """The evaluate task's held-out metrics (metrics.json's ``eval``), as ``heldout/...`` at its step."""
        values = {name: value for name, value in _flatten_numbers(evaluation).items() if name != "step"}
        event = make_event("heldout", int(evaluation.get("step") or 0), values)
        return self.log_events([event]) == 1

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)

    def _logged_steps(self, key: str) -> set[int]:
        if key not in self._steps:
            self._steps[key] = {metric.step for metric in self.client.get_metric_history(self.run_id, key)}
        return self._steps[key]

    def _send(self, metrics: list[Any]) -> None:
        self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
        for metric in metrics:
            if metric.key in self._steps:
                self._steps[metric.key].add(metric.step)


def _experiment_id(client: Any, target: TrackingTarget, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=target.artifact_location)
        except Exception:  # another run created it meanwhile
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def _flatten_numbers(data: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(_flatten_numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out
