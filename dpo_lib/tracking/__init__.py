"""Experiment tracking: every training run in MLflow, and a copy in its run folder that needs no MLflow.

* :class:`~dpo_lib.tracking.tracker.RunTracker`: what the trainer calls at its two logging points; MLflow
  is written from a background thread, so an outage never fails or slows training.
* ``run_dir/history.jsonl`` (:mod:`~dpo_lib.tracking.history`): one line per logged step.
* ``run_dir/tracking.json`` (:mod:`~dpo_lib.tracking.record`): which MLflow run holds it.
* :func:`~dpo_lib.tracking.sync.sync_run`: fills MLflow from a run folder, idempotently.
* :func:`~dpo_lib.tracking.target.resolve_target`: ``MLFLOW_TRACKING_URI``, or the embedded SQLite default.

Importing this package imports neither mlflow nor torch (DAG files may import it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dpo_lib.tracking.tracker import NULL_TRACKER, NullTracker, RunTracker

if TYPE_CHECKING:
    from dpo_lib.spec import RunSpec, TrainConfig

__all__ = ["NULL_TRACKER", "NullTracker", "RunTracker", "tracker_for"]


def tracker_for(config: TrainConfig, spec: RunSpec | None = None) -> RunTracker:
    """The tracker of a training run (not started): params from ``config``, lineage from it and ``spec``."""
    from dpo_lib.tracking.lineage import Lineage, flat_params
    from dpo_lib.tracking.target import resolve_target

    return RunTracker(config.run_dir, target=resolve_target(), lineage=Lineage.of(config, spec),
                      params=flat_params(config))  # fmt: skip
