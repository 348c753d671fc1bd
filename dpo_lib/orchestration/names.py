"""Names the DAGs share with the code around them (webhook, client, launcher), without importing Airflow."""

FINETUNE_DAG_ID = "dpo_finetune"
NIGHTLY_DAG_ID = "dpo_nightly"
GPU_POOL = "gpu"  # train tasks run in it; the launcher creates it with DPO_GPU_SLOTS slots
