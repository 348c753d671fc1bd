"""The run report and the runs list, served by the ``/dpo`` app inside Airflow's api-server.

``GET /dpo/runs/{dag_id}/{run_id}`` is one run's report (the "DPO report" tab of every run in the
Airflow UI); ``GET /dpo/runs`` is the recent runs of ``dpo_finetune`` and ``dpo_nightly`` in one
table. Both need an Airflow bearer token or the UI's session, and permission to read the DAG's runs.
Each page is self-contained: inline CSS and SVG plots, no script.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from dpo_lib.api import report_data
from dpo_lib.api.report_html import CSP, render
from dpo_lib.orchestration.names import FINETUNE_DAG_ID, NIGHTLY_DAG_ID
from dpo_lib.orchestration.runs import run_dir_of
from dpo_lib.settings import Settings

DPO_DAG_IDS = (FINETUNE_DAG_ID, NIGHTLY_DAG_ID)
RECENT_RUNS = 50


@dataclass
class AirflowRun:
    """A DAG run as Airflow's metadata database has it."""

    dag_id: str
    run_id: str
    state: str | None
    start: str | None
    tasks: list[dict[str, Any]]


# -- routes ---------------------------------------------------------------------------------------------


async def run_report(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
    """``GET /dpo/runs/{dag_id}/{run_id}``: the run's report page."""
    from dpo_lib.api.webhook import authenticated_user

    user = await authenticated_user(request, cookie=True, html=True)
    if isinstance(user, Response):
        return user
    if not await run_in_threadpool(may_read, user, dag_id):
        return message(403, "Forbidden", f"{user.get_name()} may not read the runs of {dag_id}.")
    run = await run_in_threadpool(airflow_run, dag_id, run_id)
    html = await run_in_threadpool(run_page, dag_id, run_id, run, Settings.from_env(), _base(request), framed(request))
    if html is None:
        return message(404, "Not found", f"{dag_id} has no run {run_id}.")
    return HTMLResponse(html, headers=_headers())


async def runs_list(request: Request) -> HTMLResponse:
    """``GET /dpo/runs``: the recent runs with their metrics and promotion decisions."""
    from dpo_lib.api.webhook import authenticated_user

    user = await authenticated_user(request, cookie=True, html=True)
    if isinstance(user, Response):
        return user
    dag_ids = [dag_id for dag_id in DPO_DAG_IDS if await run_in_threadpool(may_read, user, dag_id)]
    runs = await run_in_threadpool(recent_runs, dag_ids, RECENT_RUNS)
    html = await run_in_threadpool(runs_page, dag_ids, runs, Settings.from_env(), _base(request))
    return HTMLResponse(html, headers=_headers())


# -- pages (no Airflow import: unit tests call these with runs of their own) ---------------------------


def run_page(
    dag_id: str,
    run_id: str,
    run: AirflowRun | None,
    settings: Settings,
    base: str,
    framed: bool = False,
    snapshot: str | None = None,
    snapshot_by: str = "promote",
) -> str | None:
    """The report's HTML; None when neither Airflow nor the artifacts root knows the run.

    ``framed``: shown in the Airflow UI's iframe, whose sandbox forbids navigating the top window or opening
    a new one, so the page leaves out its link back to the run in Airflow and opens MLflow in the frame.
    ``snapshot``: when the page is a file (report.html) that task ``snapshot_by`` made; it shows the task
    states of ``run`` (given then) as they stood."""
    from dpo_lib.api.report_plots import curve_svg

    run_dir = run_dir_of(dag_id, run_id, settings) if dag_id in DPO_DAG_IDS else None
    if run is None and run_dir is None:
        return None
    folder = report_data.read_run_folder(run_dir)
    series = report_data.curves(folder.history)
    plots = [
        {"metric": metric, "title": title, "svg": curve_svg(title, series[metric], salt=f"{metric}-{run_id}")}
        for metric, title in report_data.CURVES.items()
        if metric in series
    ]
    columns, rows = report_data.eval_table(folder)
    dataset = folder.dataset or {}
    return render(
        "run",
        title=f"DPO report: {run_id}",
        framed=framed,
        snapshot=snapshot,
        snapshot_by=snapshot_by,
        dag_id=dag_id,
        run_id=run_id,
        is_dpo_dag=dag_id in DPO_DAG_IDS,
        state=run.state if run else None,
        tasks=run.tasks if run else [],
        exp_name=(folder.run or {}).get("exp_name"),
        run_dir=str(run_dir) if run_dir else None,
        missing=[(name, report_data.FILES[name]) for name in folder.missing],
        plots=plots,
        eval_columns=columns,
        eval_rows=rows,
        promotion=folder.promotion,
        manifest=dataset.get("manifest"),
        stats=dataset.get("stats"),
        truncation=report_data.truncation(folder),
        request=folder.request,
        final_files=folder.final_files,
        stored_uri=report_data.stored_model_uri(folder),
        registered=report_data.registered_version(folder),
        mlflow_url=report_data.tracking_url(folder.tracking),
        tracking=folder.tracking,
        tracking_store=report_data.without_credentials((folder.tracking or {}).get("tracking_uri")),
        samples=folder.samples,
        config=folder.config,
        runs_url=f"{base}/dpo/runs",
        airflow_url=f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}",
    )


def runs_page(dag_ids: list[str], runs: list[AirflowRun], settings: Settings, base: str) -> str:
    rows = []
    for run in runs:
        folder = report_data.read_run_folder(run_dir_of(run.dag_id, run.run_id, settings))
        rows.append({
            **report_data.summary(folder),
            "dag_id": run.dag_id, "run_id": run.run_id, "state": run.state, "start": run.start,
            "report_url": report_url(base, run.dag_id, run.run_id),
        })  # fmt: skip
    return render("runs", title="DPO runs", rows=rows, dag_ids=dag_ids)


def framed(request: Request) -> bool:
    """Whether the browser loads this page into a frame (``Sec-Fetch-Dest: iframe``): the UI's report tab."""
    return request.headers.get("sec-fetch-dest", "") in ("iframe", "frame")


def report_url(base: str, dag_id: str, run_id: str) -> str:
    """Where a run's report is (also the link notifications carry)."""
    return f"{base}/dpo/runs/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


# -- Airflow ------------------------------------------------------------------------------------------


def may_read(user: Any, dag_id: str) -> bool:
    """The auth manager's check for reading a DAG's runs (what ``GET /api/v2/dags/{dag_id}/dagRuns`` checks)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.models.dag import DagModel

    return get_auth_manager().is_authorized_dag(
        method="GET",
        access_entity=DagAccessEntity.RUN,
        details=DagDetails(id=dag_id, team_name=DagModel.get_team_name(dag_id)),
        user=user,
    )


def airflow_run(dag_id: str, run_id: str) -> AirflowRun | None:
    """The run and its task instances from the metadata database; None if there is no such run."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            return None
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        ).all()
        tasks = [
            {
                "task_id": ti.task_id,
                "state": _state(ti.state),
                "try_number": ti.try_number,
                "start": _time(ti.start_date),
                "duration": f"{ti.duration:.1f} s" if ti.duration is not None else None,
                "_order": (ti.start_date is None, ti.start_date or datetime.max, ti.task_id),
            }
            for ti in tis
        ]
        tasks.sort(key=lambda t: t.pop("_order"))
        return AirflowRun(dag_id, run_id, _state(run.state), _time(run.start_date), tasks)


def recent_runs(dag_ids: list[str], limit: int) -> list[AirflowRun]:
    """The newest ``limit`` runs of ``dag_ids`` (without their task instances)."""
    if not dag_ids:
        return []
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id.in_(dag_ids)).order_by(DagRun.id.desc()).limit(limit))
        return [AirflowRun(r.dag_id, r.run_id, _state(r.state), _time(r.start_date), []) for r in runs]


def _state(value: Any) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def _time(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else None


def _base(request: Request) -> str:
    """Airflow's root path as this request reached it (``""``, or a prefix such as ``/airflow``): the pages'
    links stay on the host and scheme the browser used, where its session cookie is sent."""
    root = str(request.scope.get("root_path") or "").rstrip("/")
    return root.removesuffix("/dpo")


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


def message(status: int, title: str, text: str, *, link: tuple[str, str] | None = None, **headers: str) -> HTMLResponse:
    """A short HTML page saying why there is no report (login needed, forbidden, not found)."""
    html = render("message", title=title, text=text, link=link)
    return HTMLResponse(html, status_code=status, headers={**_headers(), **headers})
