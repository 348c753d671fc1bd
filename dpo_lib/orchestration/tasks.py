"""The bodies of the ``dpo_finetune`` tasks that run on the Airflow worker itself.

Train and evaluate are command lines (``RunPlan.train_command`` / ``evaluate_command``)
run by the configured runner; these functions plan, stage and clean up around them.
"""

from __future__ import annotations

import logging
from typing import Any

from dpo_lib.orchestration.request import plan_run
from dpo_lib.orchestration.settings import Settings
from dpo_lib.orchestration.staging import check_dataset, cleanup_staging, stage_dataset

log = logging.getLogger(__name__)


def validate(conf: dict[str, Any], *, dag_id: str, run_id: str) -> dict[str, Any]:
    """Check the request, its training config and its dataset; return the run plan.

    Raises ``RequestError`` (nothing is written anywhere) when any of them is bad.
    """
    settings = Settings.from_env()
    plan = plan_run(conf, dag_id=dag_id, run_id=run_id, settings=settings)
    report = check_dataset(plan.request["dataset_uri"], settings)
    log.info(
        "request ok: %s, %d records (%s format, %d warnings); run_dir %s",
        plan.request["dataset_uri"], report["record_count"], report["format"], report["warning_count"], plan.run_dir,
    )  # fmt: skip
    for warning in report.get("warnings", []):
        log.warning("dataset: %s", warning)
    log.info("train command: %s", plan.train_command)
    return plan.to_dict()


def stage(plan: dict[str, Any]) -> dict[str, Any]:
    return stage_dataset(plan, Settings.from_env())


def cleanup(plan: dict[str, Any]) -> None:
    """The run's teardown: its staging folder, and with the docker runner any container it left."""
    settings = Settings.from_env()
    try:
        if settings.runner == "docker":
            from dpo_lib.orchestration.containers import remove_stray_containers

            remove_stray_containers(plan["dag_id"], plan["run_id"], docker_url=settings.docker.url)
    finally:
        cleanup_staging(plan, settings)
