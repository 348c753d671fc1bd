"""Where a DAG run's folder is, found from ``(dag_id, run_id)`` alone, and what the run records in it for its report.

``validate`` leaves ``run.json`` in the run folder and ``stage`` leaves ``dataset.json`` beside it;
:func:`run_dir_of` finds the folder by looking for that record under every experiment folder.
Nothing here imports Airflow, torch or the trainer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpo_lib.settings import Settings, path_safe

RUN_RECORD = "run.json"
DATASET_RECORD = "dataset.json"


def record_run(spec: Any) -> Path:
    """Write ``run.json`` (dag_id, run_id, exp_name, the request) into ``spec``'s run folder; returns its path."""
    from dpo_lib.io import atomic_write_json, make_group_writable_folder

    path = make_group_writable_folder(spec.run_dir) / RUN_RECORD
    atomic_write_json(
        path,
        {
            "dag_id": spec.dag_id,
            "run_id": spec.run_id,
            "exp_name": spec.request.exp_name,
            "run_dir": str(spec.run_dir),
            "request": spec.request.model_dump(mode="json"),
            "recorded_at": datetime.now(UTC).isoformat(),
        },
    )
    return path


def record_dataset(run_dir: str | Path, manifest: Mapping[str, Any], stats: Mapping[str, Any] | None) -> Path:
    """Write ``dataset.json`` (the staging manifest and the dataset's statistics) into ``run_dir``."""
    from dpo_lib.io import atomic_write_json, make_group_writable_folder

    path = make_group_writable_folder(run_dir) / DATASET_RECORD
    atomic_write_json(path, {"manifest": dict(manifest), "stats": dict(stats) if stats is not None else None})
    return path


def run_dir_of(dag_id: str, run_id: str, settings: Settings | None = None) -> Path | None:
    """The run folder of the DAG run ``(dag_id, run_id)``, or None if ``validate`` has not recorded one yet."""
    root = (settings or Settings.from_env()).artifacts_root
    key = path_safe(run_id)
    try:
        experiments = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return None
    for experiment in experiments:
        record = read_record(experiment / key / RUN_RECORD)
        if record and record.get("dag_id") == dag_id and record.get("run_id") == run_id:
            return experiment / key
    return None


def read_record(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
