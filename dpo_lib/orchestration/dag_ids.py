"""The project's DAG ids, for code that refers to a DAG without building it (webhook, client)."""

FINETUNE_DAG_ID = "dpo_finetune"
NIGHTLY_DAG_ID = "dpo_nightly"
