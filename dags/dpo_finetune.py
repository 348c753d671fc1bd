"""Airflow DAG ``dpo_finetune``: validate → stage_dataset → train → evaluate, with cleanup as teardown.

Trigger it with a conf such as ``{"dataset_uri": "gs://bucket/prefs.jsonl", "exp_name": "exp1",
"overrides": {"max_steps": 200}}`` (REST: ``POST /api/v2/dags/dpo_finetune/dagRuns``; webhook:
``POST /dpo/trigger-finetune``). Only wiring lives here: the task graph is built by
``dpo_lib.dag.dag_factory``, shared with ``dpo_nightly``; nothing here imports torch.
"""

from __future__ import annotations

# (Airflow's dag_discovery_safe_mode parses only files that mention both "airflow" and "dag".)
from dpo_lib.dag.dag_factory import build_finetune_dag
from dpo_lib.orchestration.names import FINETUNE_DAG_ID

dag = build_finetune_dag(FINETUNE_DAG_ID, doc_md=__doc__)
