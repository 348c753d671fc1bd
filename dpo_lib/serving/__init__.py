"""Serving the pipeline: Airflow's services, the REST client, and the ``/dpo`` plugin app.

* :mod:`~dpo_lib.serving.home` keeps the local AIRFLOW_HOME's secrets (JWT secret, admin password).
* :mod:`~dpo_lib.serving.services` starts and stops api-server, scheduler, dag-processor and triggerer.
* :mod:`~dpo_lib.serving.client` talks to Airflow's REST API through the published API client.
* :mod:`~dpo_lib.serving.health` and :mod:`~dpo_lib.serving.webhook` back the ``/dpo`` plugin.

Nothing here imports torch; Airflow is imported only inside the functions that need it.
"""
