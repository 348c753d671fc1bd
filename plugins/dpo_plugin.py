"""Airflow plugin ``dpo``: mounts the pipeline's FastAPI app at ``/dpo`` on the api-server, and shows its
reports in the Airflow UI.

``GET /dpo/health`` and ``POST /dpo/trigger-finetune`` (the fine-tune webhook); ``GET /dpo/runs`` (recent
runs compared) and ``GET /dpo/runs/{dag_id}/{run_id}`` (a run's report); see ``dpo_lib.api.webhook``
and ``dpo_lib.api.report``. In the UI (``external_views``, shown in an iframe of the same origin, so the
UI's session cookie authenticates them): a "DPO report" tab on every DAG run, and a "DPO runs" entry in
the navigation's Browse menu. Plugins load in every Airflow component, so this file only builds the app:
Airflow internals, matplotlib and the checks are imported when a request arrives.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dpo_lib.api.webhook import create_app

# hrefs are relative (no leading slash): the UI resolves them against its base URL, so they also work
# when Airflow is served under a path prefix.
REPORT_TAB = {
    "name": "DPO report",
    "href": "dpo/runs/{DAG_ID}/{RUN_ID}",
    "destination": "dag_run",
    "url_route": "dpo-report",
}
RUNS_NAV = {
    "name": "DPO runs",
    "href": "dpo/runs",
    "destination": "nav",
    "category": "browse",
    "url_route": "dpo-runs",
}


class DpoPlugin(AirflowPlugin):
    name = "dpo"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/dpo", "name": "DPO webhook, health and reports"}]
    external_views = [REPORT_TAB, RUNS_NAV]
