"""Real Airflow services for tests, started by the project's own launcher (``python -m dpo_lib services``).

Each group gets a temporary AIRFLOW_HOME, free loopback ports (api-server and both log
servers) and its own work folder, so tests never touch ``.airflow/`` or a developer's
``make api``, and two groups (SQLite, PostgreSQL) could even run side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dpo_lib.airflow_local.home import AirflowHome
from dpo_lib.api.client import AirflowAPI, Credentials, fetch_token
from dpo_lib.settings import path_safe
from tests.support.storage_emulator import free_port

START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
ADMIN = "admin"

# Quick to notice new files and to schedule; few enough worker processes for two cores.
FAST_AIRFLOW = {
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    "AIRFLOW__CORE__PARALLELISM": "6",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
}


@dataclass
class RunningServices:
    """A started service group and what tests need to talk to it."""

    url: str
    home: Path
    work: Path
    env: dict[str, str]
    credentials: Credentials
    log: Path
    launcher_pid: int = 0

    def api(self) -> AirflowAPI:
        return AirflowAPI(self.url, self.token())

    def token(self) -> str:
        return fetch_token(self.credentials)

    @property
    def staging_root(self) -> Path:
        return Path(self.env["DPO_STAGING_ROOT"])

    @property
    def artifacts_root(self) -> Path:
        return Path(self.env["DPO_ARTIFACTS_ROOT"])

    def client_env(self) -> dict[str, str]:
        """The environment for ``python -m dpo_lib trigger`` against these services."""
        return {
            **os.environ,
            "AIRFLOW_URL": self.url,
            "AIRFLOW_ADMIN_USER": self.credentials.username,
            "AIRFLOW_ADMIN_PASSWORD": self.credentials.password,
        }


def make_workdir(work: Path) -> Path:
    """The tiny model and two toy datasets (1000 pairs, and 48 for quick runs) under ``work``."""
    dpo = [sys.executable, "-m", "dpo_lib"]
    subprocess.run([*dpo, "make-tiny-model", str(work / "models" / "tiny")], check=True, capture_output=True)
    subprocess.run([*dpo, "make-toy-data", str(work / "data" / "dataset.json")], check=True, capture_output=True)
    subprocess.run(
        [*dpo, "make-toy-data", "-n", "48", str(work / "data" / "small.json")], check=True, capture_output=True
    )
    return work


@contextlib.contextmanager
def running_services(root: Path, work: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[RunningServices]:
    """Start the four services with ``root`` as scratch space; stop them (and wait) when the block ends."""
    home, log = root / "airflow-home", root / "services.log"
    # dpo_nightly stays unpaused, like every project DAG (/dpo/health counts a paused one as unhealthy), and
    # daily at a time twelve hours away, so no test sees one of its runs.
    later = datetime.now(UTC) + timedelta(hours=12)
    port = free_port()
    password = secrets.token_urlsafe(12)
    env = {
        **os.environ,
        **FAST_AIRFLOW,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_PORT": str(port),
        "AIRFLOW_HOST": "127.0.0.1",
        "AIRFLOW_ADMIN_USER": ADMIN,
        "AIRFLOW_ADMIN_PASSWORD": password,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "DPO_WORKDIR": str(work),
        "DPO_STAGING_ROOT": str(root / "staging"),
        "DPO_ARTIFACTS_ROOT": str(root / "artifacts"),
        "DPO_SERVICES_START_TIMEOUT_S": str(START_TIMEOUT_S),
        "DPO_NIGHTLY_SCHEDULE": f"{later.minute} {later.hour} * * *",
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dpo_lib", "services"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, AirflowHome(home), log)
        url = f"http://127.0.0.1:{port}"
        services = RunningServices(url, home, work, env, Credentials(url, ADMIN, password), log, proc.pid)
        api = services.api()
        # Ready means a trigger is accepted at once: both DAGs are registered already, no waiting (timeout 0).
        api.wait_for_dag("dpo_finetune", timeout_s=0)
        api.wait_for_dag("dpo_nightly", timeout_s=0)
        yield services
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen, home: AirflowHome, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not home.ready_file.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"the services exited ({proc.returncode}):\n{tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the services were not ready after {START_TIMEOUT_S:.0f}s:\n{tail(log)}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def tail(path: Path, chars: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except FileNotFoundError:
        return "(no log)"


def trigger_cli(services: RunningServices, conf: dict, *, wait: bool = True, timeout: float = 600):
    """``python -m dpo_lib trigger --conf JSON [--wait]`` against ``services``."""
    args = [sys.executable, "-m", "dpo_lib", "trigger", "--conf", json.dumps(conf), "--poll", "1"]
    return subprocess.run(
        [*args, "--wait"] if wait else args,
        env=services.client_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals that were open at the same instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    current = peak = 0
    for _, delta in events:  # at equal times an end (-1) sorts before a start (+1)
        current += delta
        peak = max(peak, current)
    return peak


def printed_metrics(stdout: str) -> dict:
    """The metrics JSON the trigger command prints after ``metrics:``."""
    return json.loads(stdout.split("metrics:\n", 1)[1])


def state(obj) -> str:
    value = obj.state
    return str(getattr(value, "value", value))


def check_toy_run_through_rest(services: RunningServices, exp_name: str, max_steps: int) -> str:
    """Trigger the toy fine-tune with the trigger command, wait, and check what REST reports; returns the run id."""
    conf = {
        "dataset_uri": "data/dataset.json",
        "exp_name": exp_name,
        "overrides": {"max_steps": max_steps, "eval_every": 0, "checkpoint_every": 0, "n_eval_examples": 16},
    }
    result = trigger_cli(services, conf)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:] + tail(services.log, 3000)
    assert "state: queued" in result.stdout and "state: success" in result.stdout
    run_id = result.stdout.split("dag_run_id: ", 1)[1].split()[0]

    metrics = printed_metrics(result.stdout)
    assert metrics["train"]["step"] == max_steps
    for name in ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert name in metrics["train"] and name in metrics["eval"]
    assert "logps/accuracies" in metrics["eval"]["reference"]
    assert "rewards/accuracies" not in metrics["eval"]["reference"]  # 0 by construction: not reported

    api = services.api()
    tis = {ti.task_id: ti for ti in api.task_instances("dpo_finetune", run_id)}
    assert {task: state(ti) for task, ti in tis.items()} == dict.fromkeys(
        ("validate", "stage", "train", "evaluate", "publish", "compare", "promote", "cleanup"), "success"
    )
    assert tis["train"].pool == "gpu"
    train_log = api.task_log("dpo_finetune", run_id, "train", 1)
    assert "train: try 1 of 3" in train_log
    assert f"step {max_steps}/{max_steps}" in train_log

    (metrics_file,) = (services.artifacts_root / exp_name).glob("*/metrics.json")
    assert json.loads(metrics_file.read_text())["train"]["step"] == max_steps
    assert not (services.staging_root / "dpo_finetune" / path_safe(run_id)).exists(), "cleanup left staged files"
    return run_id
