"""Airflow on this machine: ``python -m dpo_lib services`` (``make api``) starts and supervises
api-server, scheduler, dag-processor and triggerer with one AIRFLOW_HOME, JWT secret and admin.
"""
