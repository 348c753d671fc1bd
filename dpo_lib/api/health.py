"""What ``GET /dpo/health`` reports: metadatabase, scheduler, DAGs, storage and (with ``DPO_RUNNER=docker``)
Docker, each checked on every call with a short timeout. Anyone may ask; only callers with a valid
token see the details (:func:`public_view` is what the others get). docs/serving.md#get-dpohealth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dpo_lib.orchestration.names import FINETUNE_DAG_ID, NIGHTLY_DAG_ID
from dpo_lib.settings import Settings, StorageSettings

HEALTHY, UNHEALTHY = "healthy", "unhealthy"
PROBE_NAME = ".dpo-health-probe"  # looked up, never written


@dataclass(frozen=True)
class Check:
    """One component's status, with what a person needs to act on it."""

    name: str
    healthy: bool
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"status": HEALTHY if self.healthy else UNHEALTHY, **self.details}


def check_airflow() -> list[Check]:
    """The metadata database and the scheduler's heartbeat, as Airflow's own health endpoint sees them."""
    from airflow.api.common.airflow_health import get_airflow_health

    try:
        answer = get_airflow_health()
    except Exception as exc:  # the health module itself failed: the database is the usual cause
        return [Check("metadatabase", False, {"error": _short(exc)}), Check("scheduler", False)]
    database_ok = answer["metadatabase"]["status"] == HEALTHY
    scheduler = answer["scheduler"]
    return [
        Check("metadatabase", database_ok, {} if database_ok else {"error": "the metadata database does not answer"}),
        Check(
            "scheduler",
            scheduler["status"] == HEALTHY,
            {"latest_heartbeat": scheduler.get("latest_scheduler_heartbeat")},
        ),
    ]


def check_dags(dag_ids: tuple[str, ...] = (FINETUNE_DAG_ID, NIGHTLY_DAG_ID)) -> Check:
    """Each DAG is registered by the dag-processor, unpaused and free of import errors."""
    from airflow.models.dag import DagModel

    problems = {}
    try:
        for dag_id in dag_ids:
            model = DagModel.get_current(dag_id)
            if model is None:
                problems[dag_id] = "not registered yet (the dag-processor has not parsed it)"
            elif model.has_import_errors:
                problems[dag_id] = "has import errors"
            elif model.is_paused:
                problems[dag_id] = "is paused"
    except Exception as exc:  # the database, most likely; the metadatabase check names it
        return Check("dags", False, {"error": _short(exc)})
    return Check("dags", not problems, {"problems": problems} if problems else {"dags": list(dag_ids)})


def check_storage(settings: Settings, storage_uri: str | None, timeout: float) -> Check:
    """The configured storage answers: a bucket via one metadata request, a local root by existing."""
    if storage_uri and storage_uri.startswith("gs://"):
        return _check_bucket(storage_uri, timeout)
    root = Path(storage_uri.removeprefix("file://")) if storage_uri else settings.local_storage_root
    details = {"backend": "local", "uri": str(root)}
    if not root.is_dir():
        return Check("storage", False, {**details, "error": f"{root} is not a directory"})
    if not os.access(root, os.R_OK | os.X_OK):
        return Check("storage", False, {**details, "error": f"{root} is not readable"})
    return Check("storage", True, details)


def _check_bucket(uri: str, timeout: float) -> Check:
    from dpo_lib.storage import FirebaseStorage, ObjectNotFound, StorageError, parse_uri

    details = {"backend": "firebase", "uri": uri}
    try:
        storage = FirebaseStorage(parse_uri(uri).bucket, timeout=timeout, retry_deadline=0)
    except StorageError as exc:
        return Check("storage", False, {**details, "error": _short(exc)})
    # One metadata request for an object name under the prefix: answered (found or not)
    # whenever the bucket is reachable and the credentials may read it.
    probe = uri + PROBE_NAME if uri.endswith("/") else uri
    try:
        storage.exists(probe)
    except ObjectNotFound:
        pass
    except StorageError as exc:
        return Check("storage", False, {**details, "error": _short(exc)})
    finally:
        storage.close()
    return Check("storage", True, details)


def check_docker(settings: Settings, timeout: float) -> Check:
    """The Docker daemon the docker runner uses answers a ping."""
    import docker

    url = settings.docker.url or os.environ.get("DOCKER_HOST") or "unix://var/run/docker.sock"
    details = {"url": url}
    try:
        client = docker.DockerClient(base_url=url, timeout=max(1, int(timeout)))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # docker-py raises DockerException, requests and OS errors alike
        return Check("docker", False, {**details, "error": _short(exc)})
    return Check("docker", True, details)


def run_checks(
    env: Mapping[str, str] | None = None,
    *,
    airflow: Callable[[], list[Check]] = check_airflow,
    dags: Callable[[], Check] = check_dags,
) -> list[Check]:
    """Every check that applies to this deployment."""
    settings = Settings.from_env(env)
    timeout = settings.health_timeout_s
    checks = [*airflow(), dags(), check_storage(settings, StorageSettings.from_env(env).health_uri, timeout)]
    if settings.runner == "docker":
        checks.append(check_docker(settings, timeout))
    return checks


def report(checks: list[Check]) -> tuple[int, dict[str, Any]]:
    """HTTP status (200, or 503 naming what is down) and the JSON body."""
    down = [c.name for c in checks if not c.healthy]
    body = {
        "status": HEALTHY if not down else UNHEALTHY,
        "unhealthy": down,
        "components": {c.name: c.to_dict() for c in checks},
    }
    return (503 if down else 200), body


def public_view(body: dict[str, Any]) -> dict[str, Any]:
    """What an unauthenticated caller sees: the overall status and each component's, no details."""
    components = {name: {"status": c["status"]} for name, c in body["components"].items()}
    return {"status": body["status"], "unhealthy": body["unhealthy"], "components": components}


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
