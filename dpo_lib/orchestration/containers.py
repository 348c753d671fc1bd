"""Trainer containers by label: the names a run's containers carry and the removal of strays.

DockerOperator removes its container when the task ends (``auto_remove="force"``) and when
the task is killed (``on_kill``). Neither runs when the worker itself dies or the task
process is SIGKILLed, so every trainer container is labelled with its DAG, run, task and try,
and the run's teardown removes whatever still carries the run's labels. No Airflow here; the
Docker SDK is imported only when a function needs it.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LABEL_PREFIX = "io.dpo-pipeline."
DAG_LABEL = LABEL_PREFIX + "dag-id"
RUN_LABEL = LABEL_PREFIX + "run-id"
TASK_LABEL = LABEL_PREFIX + "task-id"
TRY_LABEL = LABEL_PREFIX + "try-number"


def container_labels(*, dag_id: str, run_id: str, task_id: str, try_number: int) -> dict[str, str]:
    """The labels of one task try's container (Docker label values are strings)."""
    return {DAG_LABEL: dag_id, RUN_LABEL: run_id, TASK_LABEL: task_id, TRY_LABEL: str(try_number)}


def run_filter(dag_id: str, run_id: str) -> dict[str, list[str]]:
    """A Docker ``filters`` argument matching every container of one DAG run."""
    return {"label": [f"{DAG_LABEL}={dag_id}", f"{RUN_LABEL}={run_id}"]}


def remove_stray_containers(
    dag_id: str, run_id: str, *, docker_url: str | None = None, client: Any = None
) -> list[str]:
    """Force-remove every container (running or not) labelled with this DAG run; return their ids.

    Meant for the run's teardown when ``DPO_RUNNER=docker``: by then no task of the run should
    have a container, so anything left is a stray from a killed task or a lost worker.
    """
    import docker
    from docker.errors import NotFound

    if client is None:
        client = docker.DockerClient(base_url=docker_url) if docker_url else docker.from_env()
    removed = []
    for container in client.containers.list(all=True, filters=run_filter(dag_id, run_id)):
        log.warning("removing stray trainer container %s (%s)", container.short_id, container.labels.get(TASK_LABEL))
        try:
            container.remove(force=True)
        except NotFound:  # its own task removed it meanwhile
            continue
        removed.append(container.id)
    if not removed:
        log.info("no trainer container left for %s / %s", dag_id, run_id)
    return removed
