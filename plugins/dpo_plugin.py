"""Airflow plugin ``dpo``: mounts the pipeline's FastAPI app at ``/dpo`` on the api-server.

``GET /dpo/health`` and ``POST /dpo/trigger-finetune`` (the fine-tune webhook); see
``dpo_lib.api.webhook``. Plugins load in every Airflow component, so this file only
builds the app: Airflow internals and the checks are imported when a request arrives.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dpo_lib.api.webhook import create_app


class DpoPlugin(AirflowPlugin):
    name = "dpo"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/dpo", "name": "DPO webhook and health"}]
