"""DAG ``dpo_nightly``: the ``dpo_finetune`` task graph on a schedule, every night by default.

What runs is chosen without asking the metadata database while the file is parsed:

* the schedule, a cron expression in UTC: ``DPO_NIGHTLY_SCHEDULE``, or the Airflow Variable
  ``dpo_nightly_schedule`` set as an environment variable (``AIRFLOW_VAR_DPO_NIGHTLY_SCHEDULE``)
  [``0 2 * * *``, 02:00 UTC];
* the dataset: ``DPO_NIGHTLY_DATASET_URI`` (or ``AIRFLOW_VAR_DPO_NIGHTLY_DATASET_URI``) when the file
  is parsed, and at run time the Airflow Variable ``dpo_nightly_dataset_uri`` wherever it is kept
  (UI, CLI, secrets backend), which ``validate`` reads for a run whose conf names no dataset
  [``data/dataset.json``].

No catchup (a missed night is not replayed), one active run at a time, and every Param has a
valid default, so a scheduled run needs no conf. Its user-facing docs are ``DOC_MD`` below.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import CronTriggerTimetable

from dpo_lib.dag.dag_factory import build_finetune_dag
from dpo_lib.orchestration.names import NIGHTLY_DAG_ID
from dpo_lib.settings import NightlySettings

nightly = NightlySettings.from_env()

DOC_MD = f"""
### Nightly DPO fine-tune

The same fine-tune as `dpo_finetune` (see its docs for what each task does), run by itself every night
at `{nightly.schedule}` (cron, UTC) on the current preference data, so the model keeps up with new
feedback. Only one nightly run is active at a time, and a night that was missed is not replayed.

**The data** is the Airflow Variable `dpo_nightly_dataset_uri` (Admin → Variables) when it is set, else
`{nightly.dataset_uri}`. Change the Variable to point the next night's run at new data; no redeploy.
The schedule is set by the deployment (`DPO_NIGHTLY_SCHEDULE`).

**Run it now** with *Trigger*: the form's defaults are what a night runs, and any field can be changed
for this run only (e.g. `{{"overrides": {{"max_steps": 50}}}}` for a quick check).

**Results**: this run's **DPO report** tab shows the curves, the evaluation against the reference and
the champion, and whether the model was promoted; **Browse → DPO runs** compares the nights in one
table. Runs are filed under the experiment `nightly`. A failed night and each promotion are emailed when
the Airflow Connection `dpo_notify` is set up.

Owner: `ml-platform`.
"""

dag = build_finetune_dag(
    NIGHTLY_DAG_ID,
    # run_immediately=0: the first run is the next slot. (False would still run a slot missed by
    # less than a tenth of a day when the DAG first appears: Airflow 3.3's "recent enough" rule.)
    schedule=CronTriggerTimetable(nightly.schedule, timezone="UTC", run_immediately=timedelta(0)),
    param_defaults={"dataset_uri": nightly.dataset_uri, "exp_name": "nightly"},
    runtime_variables={"dataset_uri": "dpo_nightly_dataset_uri"},
    max_active_runs=1,
    description="Nightly DPO fine-tune (schedule and dataset from DPO_NIGHTLY_* or the dpo_nightly_* Variables)",
    doc_md=DOC_MD,
    tags=["dpo", "nightly"],
)
