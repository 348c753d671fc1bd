"""Names the DAGs share with the code around them (webhook, client, launcher), without importing Airflow."""

import secrets
from datetime import UTC, datetime

FINETUNE_DAG_ID = "dpo_finetune"
NIGHTLY_DAG_ID = "dpo_nightly"
GPU_POOL = "gpu"  # train tasks run in it; the launcher creates it with DPO_GPU_SLOTS slots


def new_run_id(now: datetime | None = None) -> str:
    """A run id in Airflow's form for manual runs (``manual__<time>``) plus a random suffix.

    The time alone collides when two callers (two webhook requests, two clients) trigger in
    the same microsecond: one of them would be refused as a duplicate.
    """
    return f"manual__{(now or datetime.now(UTC)).isoformat()}_{secrets.token_hex(4)}"
