"""``run_dir/tracking.json``: the MLflow run a training run logs to, so every later step (a resumed
train, evaluate, publish, promote, the report page) finds the same one.

``{"tracking_uri", "experiment_id", "experiment_name", "run_id", "run_name", "ui_url", "synced",
"updated_at"}``: ``ui_url`` is the run's page when the store is a server (else null: ``make mlflow``
serves one), ``synced`` whether MLflow held every line of history.jsonl when it was last written.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from dpo_lib.io import atomic_write_json

TRACKING_FILE = "tracking.json"


@dataclass(frozen=True)
class TrackingRecord:
    tracking_uri: str
    experiment_id: str
    experiment_name: str
    run_id: str
    run_name: str
    ui_url: str | None = None
    synced: bool = False
    updated_at: str = ""

    def write(self, run_dir: str | Path) -> None:
        data = {**asdict(self), "updated_at": datetime.now(UTC).isoformat(timespec="seconds")}
        atomic_write_json(Path(run_dir) / TRACKING_FILE, data)

    @classmethod
    def read(cls, run_dir: str | Path) -> TrackingRecord | None:
        """The record, or None when there is none (or it cannot be read: the run is then logged anew)."""
        path = Path(run_dir) / TRACKING_FILE
        try:
            data = json.loads(path.read_text())
            return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        except (OSError, ValueError, TypeError):
            return None
