"""DAG ``dpo_nightly``: the ``dpo_finetune`` task graph on a schedule, every night by default.

Airflow Variables choose what runs (read when the file is parsed; defaults in brackets):

* ``dpo_nightly_schedule``: a cron expression in UTC [``0 2 * * *``, 02:00 UTC];
* ``dpo_nightly_dataset_uri``: the dataset to fine-tune on [``data/dataset.json``].

No catchup (a missed night is not replayed), one active run at a time, and every Param has a
valid default, so a scheduled run needs no conf. Trigger it by hand with a conf to override one.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable, Variable

from dpo_lib.orchestration.dag_factory import build_finetune_dag
from dpo_lib.orchestration.names import NIGHTLY_DAG_ID

SCHEDULE = Variable.get("dpo_nightly_schedule", default="0 2 * * *")
DATASET_URI = Variable.get("dpo_nightly_dataset_uri", default="data/dataset.json")

dag = build_finetune_dag(
    NIGHTLY_DAG_ID,
    # run_immediately=0: the first run is the next slot. (False would still run a slot missed by
    # less than a tenth of a day when the DAG first appears: Airflow 3.3's "recent enough" rule.)
    schedule=CronTriggerTimetable(SCHEDULE, timezone="UTC", run_immediately=timedelta(0)),
    param_defaults={"dataset_uri": DATASET_URI, "exp_name": "nightly"},
    max_active_runs=1,
    description="Nightly DPO fine-tune (schedule and dataset from Airflow Variables)",
    doc_md=__doc__,
    tags=["dpo", "nightly"],
)
