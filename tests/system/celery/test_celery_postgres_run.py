"""The distributed shape, natively: the toy fine-tune on the CeleryExecutor with Redis and PostgreSQL.

What teams run when they outgrow one machine, on loopback: Debian's PostgreSQL (metadata
database and Celery result backend) and Redis (broker), Airflow's services started by the
project's launcher with ``AIRFLOW__CORE__EXECUTOR=CeleryExecutor``, and a separate
``airflow celery worker`` process that runs every task.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dpo_lib.airflow_local.home import AirflowHome
from dpo_lib.airflow_local.services import ServiceConfig, airflow_env
from dpo_lib.api.client import run_metrics
from dpo_lib.settings import path_safe
from tests.support.airflow_services import RunningServices, make_workdir, running_services, tail
from tests.support.postgres_server import postgres_server
from tests.support.redis_server import redis_server

pytestmark = pytest.mark.slow
DAG_ID = "dpo_finetune"


@contextlib.contextmanager
def celery_worker(services: RunningServices, log: Path) -> Iterator[subprocess.Popen]:
    """``airflow celery worker`` with the services' own environment (database, broker, JWT secret, API URL)."""
    env = airflow_env(ServiceConfig.from_env(services.env), AirflowHome(services.home).secrets(), base=services.env)
    airflow = str(Path(sys.executable).with_name("airflow"))
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [airflow, "celery", "worker", "--concurrency", "2"],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()  # a warm shutdown: running tasks finish first
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def workloads_succeeded(log: Path, expected: int, timeout_s: float = 30) -> bool:
    """Whether the worker reports ``expected`` finished workloads (the last one may log just after the run ends)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = re.findall(r"Task execute_workload\[[0-9a-f-]+\] succeeded", log.read_text(errors="replace"))
        if len(found) >= expected or time.monotonic() > deadline:
            return len(found) == expected
        time.sleep(1)


def test_toy_run_on_celery_with_redis_and_postgres(tmp_path_factory):
    root = tmp_path_factory.mktemp("celery")
    work = make_workdir(root / "work")
    with postgres_server() as pg, redis_server() as broker:
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
            "AIRFLOW__CELERY__BROKER_URL": broker,
            "AIRFLOW__CELERY__RESULT_BACKEND": pg.celery_result_backend,
            "DPO_RUNNER": "local",
        }
        with running_services(root, work, env) as services, celery_worker(services, root / "worker.log") as worker:
            api = services.api()
            conf = {"dataset_uri": "data/dataset.json", "exp_name": "celery", "overrides": {"max_steps": 40}}
            run_id = api.trigger(DAG_ID, conf).dag_run_id
            final = api.wait(DAG_ID, run_id, timeout_s=900, poll_s=2)
            worker_log = (root / "worker.log").read_text(errors="replace")
            assert getattr(final.state, "value", final.state) == "success", worker_log[-4000:] + tail(services.log)

            metrics = json.loads((services.artifacts_root / "celery" / path_safe(run_id) / "metrics.json").read_text())
            assert metrics["train"]["step"] == 40 and metrics["eval"]["n_pairs"] > 0
            assert run_metrics(api, DAG_ID, run_id) == metrics
            assert worker.poll() is None

            # Every task went through the broker to the worker, and the run is in PostgreSQL.
            tasks = {ti.task_id for ti in api.task_instances(DAG_ID, run_id)}
            assert tasks == {"validate", "stage", "train", "evaluate", "publish", "compare", "promote", "cleanup"}
            assert workloads_succeeded(root / "worker.log", len(tasks)), worker_log[-4000:]
            with contextlib.closing(pg.connect()) as conn, conn.cursor() as cur:
                cur.execute("SELECT state FROM dag_run WHERE dag_id = %s AND run_id = %s", (DAG_ID, run_id))
                assert cur.fetchone() == ("success",)
                cur.execute("SELECT count(*) FROM task_instance WHERE run_id = %s AND hostname <> ''", (run_id,))
                assert cur.fetchone() == (len(tasks),)
