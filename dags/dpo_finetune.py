"""Airflow DAG ``dpo_finetune``: the on-demand DPO fine-tune (its user-facing docs are ``DOC_MD`` below).

Only wiring lives here: the task graph is built by ``dpo_lib.dag.dag_factory``, shared with
``dpo_nightly``; nothing here imports torch.
"""

from __future__ import annotations

# (Airflow's dag_discovery_safe_mode parses only files that mention both "airflow" and "dag".)
from dpo_lib.dag.dag_factory import build_finetune_dag
from dpo_lib.orchestration.names import FINETUNE_DAG_ID

DOC_MD = """
### DPO fine-tune

Teaches a language model which of two answers people prefer. You give it **preference data**: records of
a `prompt`, a `chosen` answer and a `rejected` one. The run fine-tunes the base model with Direct
Preference Optimization, so it favours answers like the chosen ones, and measures the result on pairs it
held out from training, next to the untouched base model (the *reference*).

**Run it** with *Trigger* and a JSON conf; every field has a default, and the form describes each one:

```json
{"dataset_uri": "gs://my-bucket/prefs.jsonl", "exp_name": "nov", "overrides": {"max_steps": 200}}
```

`dataset_uri` is your data (`gs://bucket/path`, or a path on the Airflow workers' storage), `model`,
`loss` and `trainer` pick what to train and how, and `overrides` sets any training value (learning rate,
steps, β…). Scripts can trigger it too: `POST /dpo/trigger-finetune` or Airflow's REST API.

**What happens**, task by task:

1. `validate` checks your request; a bad field fails here, named, before anything is copied.
2. `stage` copies the dataset and checks every record, and the base model if `model_uri` names one; bad data
   fails here, naming the record.
3. `train` fine-tunes the model. If it is interrupted, Airflow retries it and it resumes from its last checkpoint.
4. `evaluate` measures the model and the reference on the held-out pairs.
5. `publish` stores the model and its results (at `output_uri`; by default beside the dataset), logs the
   run to MLflow and registers the model as a new version of `registered_model_name`.
6. `compare` measures the current champion on the same pairs, and has each model answer a few held-out prompts.
7. `promote` makes the new version the champion only if it beats the current one (`promotion` says by
   which metric and margin).
8. `cleanup` removes the run's temporary copy of the data once `validate` has passed, whatever happened after;
   for a run that failed, it writes the report (below) into the run folder, with each task's state.

**Results**: open this run's **DPO report** tab (at the top of the run's page): loss, reward accuracy
and margin curves, the evaluation table (your model, the reference, the champion), the promotion
decision, the dataset's statistics, the resolved config, and answers of each model to held-out prompts,
side by side. **Browse → DPO runs** compares recent runs in one table. The files are in the run folder,
`<artifacts root>/<exp_name>/<run id>/`: the model in `final/` (with a model card), `metrics.json`,
`config.json`.

A failed run and each promotion are emailed when the Airflow Connection `dpo_notify` is set up. The
dataset appears on the **Assets** page each time its content changes.

Owner: `ml-platform`.
"""

dag = build_finetune_dag(FINETUNE_DAG_ID, doc_md=DOC_MD)
