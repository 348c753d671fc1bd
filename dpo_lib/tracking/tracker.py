"""The tracker the trainer calls at its two logging points: ``log("train"|"eval", step, metrics)``.

Rank 0 gets a :class:`RunTracker`, every other process the :class:`NullTracker`. A call appends the
event to ``run_dir/history.jsonl`` and queues it for one background thread that logs to MLflow,
goes on offline when MLflow fails and replays what MLflow lacks once it answers. Training never
fails and never waits on tracking.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpo_lib.tracking.history import History, make_event
from dpo_lib.tracking.lineage import Lineage
from dpo_lib.tracking.record import TrackingRecord
from dpo_lib.tracking.target import TrackingTarget

log = logging.getLogger(__name__)


class NullTracker:
    """Tracks nothing: the default of every trainer, and of every process but rank 0."""

    def log(self, split: str, step: int, metrics: Mapping[str, Any]) -> None:
        return None

    def close(self, failed: bool = False) -> None:
        return None


NULL_TRACKER = NullTracker()


class RunTracker:
    """Rank 0's tracker of one training run: history.jsonl now, MLflow from a background thread."""

    def __init__(self, run_dir: str | Path, *, target: TrackingTarget, lineage: Lineage, params: Mapping[str, str],
                 queue_size: int = 1024, retry_s: float = 10.0, sync_timeout_s: float = 60.0) -> None:  # fmt: skip
        self.run_dir = Path(run_dir)
        self.target, self.lineage, self.params = target, lineage, dict(params)
        self.history = History(self.run_dir)
        self.retry_s, self.sync_timeout_s = retry_s, sync_timeout_s
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._run: Any = None  # the MlflowRun, once open
        self._behind = False  # MLflow lacks events: replay the history when it answers
        self._retry_at = 0.0
        self._offline = False  # MLflow failed and has not answered since
        self._history_failed = False
        self.synced = False
        self._status = "FINISHED"

    # ---- the trainer's side ------------------------------------------------------------------------
    def start(self, resume_step: int = 0) -> RunTracker:
        """Trim the history to ``resume_step`` (a resumed run logs the later steps again) and start logging."""
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.history.keep_until(resume_step)
        except OSError as exc:
            log.warning("cannot trim %s (%s); training goes on", self.history.path, exc)
        self._thread.start()
        return self

    def log(self, split: str, step: int, metrics: Mapping[str, Any]) -> None:
        """Record one logged step: history.jsonl now, MLflow soon. Never raises, never waits."""
        try:
            event = make_event(split, step, metrics)
        except (TypeError, ValueError) as exc:
            log.warning("not tracked: %s metrics at step %s (%s)", split, step, exc)
            return
        try:
            self.history.append(event)
        except OSError as exc:  # a full disk: training handles that where it matters (checkpoints)
            if not self._history_failed:
                log.warning("cannot append to %s (%s); MLflow still gets the live metrics", self.history.path, exc)
            self._history_failed = True
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._behind = True

    def close(self, failed: bool = False) -> None:
        """Sync the whole history to MLflow and end the run (FAILED when ``failed``: training raised), waiting
        at most ``sync_timeout_s``."""
        if not self._thread.is_alive():
            return
        self._status = "FAILED" if failed else "FINISHED"
        self._stop.set()
        self._thread.join(self.sync_timeout_s)
        if self._thread.is_alive():
            log.warning("MLflow (%s) did not take the run's metrics within %.0f s; they are in %s, and publish "
                        "or `python -m dpo_lib.tracking.sync %s` sends them", self.target.uri, self.sync_timeout_s,
                        self.history.path, self.run_dir)  # fmt: skip

    # ---- the background thread ----------------------------------------------------------------------
    def _work(self) -> None:
        self._try(self._open)
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if self._run is None or self._behind:
                if time.monotonic() >= self._retry_at:
                    self._try(self._catch_up)
            else:
                self._try(lambda event=event: self._run.log_events([event]))
        # End of the run: MLflow gets whatever it lacks (idempotent), then the run is finished.
        self._retry_at = 0.0
        if self._try(self._catch_up) and self._try(lambda: self._run.finish(self._status)):
            self.synced = True
        self._write_record()

    def _open(self) -> None:
        from dpo_lib.tracking.mlflow_run import MlflowRun, make_client

        client = make_client(self.target)
        run = MlflowRun.open(client, self.target, experiment=self.lineage.exp_name, run_name=self.run_dir.name,
                             previous=TrackingRecord.read(self.run_dir))  # fmt: skip
        run.record.write(self.run_dir)  # first: a retry of this opens the same run again
        run.set_tags(self.lineage.tags())
        run.log_params(self.params)
        self._run = run
        log.info("tracking to MLflow %s: experiment %s, run %s%s", self.target.uri, self.lineage.exp_name,
                 run.run_id, f" ({run.record.ui_url})" if run.record.ui_url else "")  # fmt: skip

    def _catch_up(self) -> None:
        if self._run is None:
            self._open()
        self._behind = True
        sent = self._run.log_events(self.history.read())
        self._behind = False
        if self._offline:
            log.info("MLflow (%s) answers again: %d logged steps sent from %s", self.target.uri, sent,
                     self.history.path)  # fmt: skip
            self._offline = False

    def _try(self, action: Any) -> bool:
        """Run ``action``; on failure warn (once an outage) and go offline until ``retry_s`` from now."""
        try:
            action()
        except Exception as exc:
            if not self._offline:
                log.warning("MLflow (%s) failed: %s; training goes on, its metrics are kept in %s and sent "
                            "when MLflow answers", self.target.uri, _one_line(exc), self.history.path)  # fmt: skip
            self._offline = self._behind = True
            self._retry_at = time.monotonic() + self.retry_s
            return False
        return True

    def _write_record(self) -> None:
        if self._run is None:
            return
        record = dataclasses.replace(self._run.record, synced=self.synced)
        try:
            record.write(self.run_dir)
        except OSError as exc:
            log.warning("cannot write %s: %s", self.run_dir / "tracking.json", exc)


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
