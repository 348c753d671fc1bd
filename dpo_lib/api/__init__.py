"""The pipeline's HTTP surface: the ``/dpo`` webhook and health check, and a client of Airflow's REST API.

* :mod:`~dpo_lib.api.webhook`: the FastAPI app the Airflow plugin mounts at ``/dpo``.
* :mod:`~dpo_lib.api.health`: what ``GET /dpo/health`` checks.
* :mod:`~dpo_lib.api.client` and :mod:`~dpo_lib.api.trigger_cli`: ``python -m dpo_lib trigger``.

No torch here; Airflow is imported inside the functions that need it.
"""
