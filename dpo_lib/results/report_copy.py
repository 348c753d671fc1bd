"""The run report as files that outlive the Airflow deployment: ``run_dir/report.html`` and a stored copy.

``promote`` writes ``report.html`` once the decision is made: the same page the ``/dpo`` plugin serves
(curves, the evaluation table, the promotion decision, the dataset, generations, the resolved config), as
the run stood then, with links to Airflow at ``base``. It opens in any browser, offline. For a run that
``promote`` did not finish (a failure, or a run marked done by hand), ``cleanup`` writes it instead, with
the task states, so the run folder still says how far the run got and why it stopped. The page,
``promotion.json`` and ``samples.json`` are then stored under ``<output_uri>report/`` with their own
``upload.json`` (:mod:`~dpo_lib.results.upload`), beside the model copy that ``publish`` completed
earlier and that this never touches: a reader of the model never sees it incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dpo_lib.io import atomic_write_text
from dpo_lib.results.upload import upload_files
from dpo_lib.settings import Settings
from dpo_lib.spec import RunSpec

if TYPE_CHECKING:
    from dpo_lib.api.report import AirflowRun

REPORT_HTML = "report.html"
REPORT_PREFIX = "report/"  # under the run's output_uri
REPORT_FILES = (REPORT_HTML, "promotion.json", "samples.json")


FAILED_STATES = ("failed", "upstream_failed")


def write_report(spec: RunSpec, settings: Settings, base: str, *, made_by: str = "promote",
                 run: AirflowRun | None = None) -> Path:  # fmt: skip
    """Render the run's report page into ``run_dir/report.html`` (``base``: the Airflow UI's address;
    ``run``: the task states to show, as they stand now)."""
    from dpo_lib.api.report import run_page

    made_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = run_page(spec.dag_id, spec.run_id, run, settings, base.rstrip("/"), snapshot=made_at,
                    snapshot_by=made_by)  # fmt: skip
    if page is None:
        raise FileNotFoundError(f"no run folder recorded for {spec.dag_id} {spec.run_id} under "
                                f"{settings.artifacts_root}")  # fmt: skip
    path = spec.run_dir / REPORT_HTML
    atomic_write_text(path, page)
    return path


def write_unfinished_report(spec: RunSpec, settings: Settings, base: str,
                            task_states: Mapping[str, str | None]) -> Path | None:  # fmt: skip
    """``cleanup``'s report.html for a run whose ``promote`` did not succeed, showing ``task_states``
    (task id to state, in the DAG's order); None, writing nothing, when ``promote`` succeeded."""
    from dpo_lib.api.report import AirflowRun

    if task_states.get("promote") == "success":
        return None
    tasks = [{"task_id": task_id, "state": state, "try_number": None, "start": None, "duration": None}
             for task_id, state in task_states.items()]  # fmt: skip
    failed = any(state in FAILED_STATES for state in task_states.values())
    run = AirflowRun(spec.dag_id, spec.run_id, "failed" if failed else None, None, tasks)
    return write_report(spec, settings, base, made_by="cleanup", run=run)


def store_report(spec: RunSpec, output_uri: str, settings: Settings) -> dict[str, Any]:
    """Store the report files of the run folder under ``<output_uri>report/``, ``upload.json`` last."""
    from dpo_lib.storage import get_storage

    files = {name: spec.run_dir / name for name in REPORT_FILES if (spec.run_dir / name).is_file()}
    prefix = output_uri + REPORT_PREFIX
    with get_storage(prefix, local_root=settings.local_storage_root) as storage:
        return upload_files(storage, files, prefix, info={"dag_id": spec.dag_id, "run_id": spec.run_id})
