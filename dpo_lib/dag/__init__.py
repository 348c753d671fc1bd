"""The fine-tune DAG's Airflow wiring: the task graph, its retries, and the operators that run train, evaluate and compare.

This is the package that imports Airflow at module level; DAG files import it. It never
imports torch: task bodies live in :mod:`dpo_lib.orchestration` and import their work lazily.
"""
