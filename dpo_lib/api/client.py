"""Airflow's REST API through its published Python client (``apache-airflow-client``).

Only the token comes from a plain HTTP call: ``POST /auth/token`` belongs to the auth
manager, not to the public API the client is generated from. Everything else (trigger,
run state, task instances, logs, XCom, pools) goes through the generated client, so a
change in the API shows up as a client error rather than as a silently wrong URL.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3

from dpo_lib.airflow_local.home import AirflowHome
from dpo_lib.orchestration.names import new_run_id

FINISHED_STATES = {"success", "failed"}
DEFAULT_TIMEOUT_S = 30.0
# SQLite, the development database, refuses concurrent writers now and then ("database is
# locked", a 500); a few retries ride that out.
RETRY_ATTEMPTS = 5
RETRY_BACKOFF_S = 1.0


class AirflowAPIError(RuntimeError):
    """A REST call failed; the message has the status and Airflow's own explanation."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """Where Airflow is and who calls it."""

    url: str
    username: str
    password: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """AIRFLOW_URL (default http://localhost:$AIRFLOW_PORT), AIRFLOW_ADMIN_USER, AIRFLOW_ADMIN_PASSWORD.

        Without AIRFLOW_ADMIN_PASSWORD the password that ``python -m dpo_lib services`` kept in
        the local AIRFLOW_HOME is used, so a fresh clone needs no configuration.
        """
        env = os.environ if env is None else env
        url = env.get("AIRFLOW_URL") or f"http://localhost:{env.get('AIRFLOW_PORT') or 8080}"
        username = env.get("AIRFLOW_ADMIN_USER") or "admin"
        password = env.get("AIRFLOW_ADMIN_PASSWORD")
        if not password:
            home = Path(env.get("AIRFLOW_HOME") or Path(__file__).resolve().parents[2] / ".airflow")
            password = AirflowHome(home).stored_password(username)
        if not password:
            raise AirflowAPIError(
                f"no password for {username!r}: set AIRFLOW_ADMIN_PASSWORD "
                "(or AIRFLOW_HOME to the folder `python -m dpo_lib services` uses)"
            )
        return cls(url.rstrip("/"), username, password)


def fetch_token(credentials: Credentials, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """A JWT from the auth manager's ``POST /auth/token``."""
    body = json.dumps({"username": credentials.username, "password": credentials.password}).encode()
    request = urllib.request.Request(
        f"{credentials.url}/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["access_token"]
    except urllib.error.HTTPError as exc:
        raise AirflowAPIError(
            f"POST {credentials.url}/auth/token: {exc.code} {exc.read().decode(errors='replace')[:500]}", exc.code
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise AirflowAPIError(f"POST {credentials.url}/auth/token: {exc}") from None


class AirflowAPI:
    """The few REST operations the project needs, on one authenticated ``ApiClient``."""

    def __init__(self, url: str, token: str, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        from airflow_client import client

        self._client_module = client
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.api_client = client.ApiClient(client.Configuration(host=self.url, access_token=token))

    @classmethod
    def login(cls, credentials: Credentials | None = None) -> AirflowAPI:
        credentials = credentials or Credentials.from_env()
        return cls(credentials.url, fetch_token(credentials))

    def _call(self, what: str, fn, *args, attempts: int = RETRY_ATTEMPTS, **kwargs):
        """One API call, retried on 5xx and lost connections (``attempts`` tries in all).

        Only safe to retry because every operation here is a read, a create with a fixed id
        (see :meth:`trigger`), or an update to fixed values.
        """
        attempt = 1
        while True:
            try:
                return fn(*args, _request_timeout=self.timeout, **kwargs)
            except self._client_module.ApiException as exc:
                error = AirflowAPIError(f"{what}: {exc.status} {_detail(exc.body)}", exc.status)
                if (exc.status is not None and exc.status < 500) or attempt >= attempts:
                    raise error from None
            except (OSError, urllib3.exceptions.HTTPError) as exc:  # refused, reset, timed out
                if attempt >= attempts:
                    raise AirflowAPIError(f"{what}: no answer from {self.url}: {exc}") from None
            time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            attempt += 1

    def trigger(self, dag_id: str, conf: Mapping[str, Any], run_id: str | None = None) -> Any:
        """Queue a run of ``dag_id`` with ``conf``; Airflow validates it against the DAG's Params.

        The run id is chosen here (Airflow's own ``manual__<time>`` form unless given), so a
        retry after a lost answer cannot create a second run: it finds the first one (409).
        """
        c = self._client_module
        run_id = run_id or new_run_id()
        body = c.TriggerDAGRunPostBody(logical_date=None, conf=dict(conf), dag_run_id=run_id)
        api = c.DagRunApi(self.api_client)
        attempt = 1
        while True:
            try:
                return self._call(f"trigger {dag_id}", api.trigger_dag_run, dag_id, body, attempts=1)
            except AirflowAPIError as exc:
                if exc.status == 409 and attempt > 1:  # an earlier attempt did create it
                    return self.dag_run(dag_id, run_id)
                transient = exc.status is None or exc.status >= 500
                if not transient or attempt == RETRY_ATTEMPTS:
                    raise
            time.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
            attempt += 1

    def dag_run(self, dag_id: str, run_id: str) -> Any:
        c = self._client_module
        return self._call(f"run {run_id}", c.DagRunApi(self.api_client).get_dag_run, dag_id, run_id)

    def dag_runs(self, dag_id: str) -> list[str]:
        """The ids of ``dag_id``'s runs, oldest first."""
        c = self._client_module
        api = c.DagRunApi(self.api_client)
        runs = self._call(f"runs of {dag_id}", api.get_dag_runs, dag_id, order_by=["run_after"], limit=1000).dag_runs
        return [run.dag_run_id for run in runs]

    def wait(self, dag_id: str, run_id: str, *, timeout_s: float = 3600, poll_s: float = 3.0, on_change=None) -> Any:
        """Poll the run until it finishes; ``on_change(run)`` sees every new state."""
        deadline, last = time.monotonic() + timeout_s, None
        while True:
            run = self.dag_run(dag_id, run_id)
            state = _value(run.state)
            if state != last and on_change is not None:
                on_change(run)
            last = state
            if state in FINISHED_STATES:
                return run
            if time.monotonic() > deadline:
                raise AirflowAPIError(f"run {run_id} still {state} after {timeout_s:.0f}s")
            time.sleep(poll_s)

    def wait_for_dag(self, dag_id: str, *, timeout_s: float = 120, poll_s: float = 2.0) -> None:
        """Wait until the dag-processor has registered ``dag_id`` (a fresh Airflow parses it first)."""
        c = self._client_module
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._call(f"DAG {dag_id}", c.DAGApi(self.api_client).get_dag, dag_id)
                return
            except AirflowAPIError as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            time.sleep(poll_s)

    def task_instances(self, dag_id: str, run_id: str) -> list[Any]:
        c = self._client_module
        api = c.TaskInstanceApi(self.api_client)
        return self._call(f"task instances of {run_id}", api.get_task_instances, dag_id, run_id).task_instances

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """The text of one try's log, one line per event, errors with their exception.

        Read as raw JSON through the client: its model of a log line keeps only ``event`` and
        ``timestamp`` and would drop the level and the exception of a failed try.
        """
        c = self._client_module
        api = c.TaskInstanceApi(self.api_client)
        response = self._call(
            f"log of {task_id} try {try_number}",
            api.get_log_without_preload_content,
            dag_id,
            run_id,
            task_id,
            try_number,
            full_content=True,
            accept="application/json",
        )
        if response.status >= 400:
            raise AirflowAPIError(f"log of {task_id} try {try_number}: {response.status} {_detail(response.data)}")
        return render_log(json.loads(response.data).get("content") or [])

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        c = self._client_module
        api = c.XComApi(self.api_client)
        entry = self._call(f"XCom {task_id}.{key}", api.get_xcom_entry, dag_id, task_id, run_id, key, deserialize=True)
        return getattr(entry, "actual_instance", entry).value

    def ensure_pool(self, name: str, slots: int, description: str) -> None:
        """Create the pool, or set its slots and description if it exists."""
        c = self._client_module
        api = c.PoolApi(self.api_client)
        try:
            self._call(f"pool {name}", api.get_pool, name)
        except AirflowAPIError as exc:
            if exc.status != 404:
                raise
            self._call(
                f"create pool {name}", api.post_pool, c.PoolBody(name=name, slots=slots, description=description)
            )
            return
        # The whole pool: with a partial body and update_mask, Airflow 3.3.2 answers 422.
        body = c.PoolPatchBody(pool=name, slots=slots, description=description, include_deferred=False)
        self._call(f"update pool {name}", api.patch_pool, name, body)


def run_metrics(api: AirflowAPI, dag_id: str, run_id: str) -> dict | None:
    """The run's final metrics: the ``evaluate`` task prints metrics.json as its last line (its XCom)."""
    value = api.xcom(dag_id, run_id, "evaluate")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def _value(state: Any) -> str | None:
    return None if state is None else getattr(state, "value", state)


def _detail(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        detail = json.loads(body).get("detail", body)
    except (TypeError, ValueError, AttributeError):
        detail = body
    return (detail if isinstance(detail, str) else json.dumps(detail))[:2000]


def render_log(content: list[Any]) -> str:
    """Structured log lines (dicts) or plain strings as text: ``time level event`` and any exception."""
    lines = []
    for item in content:
        if not isinstance(item, dict):
            lines.append(str(item))
            continue
        head = " ".join(str(part) for part in (item.get("timestamp"), item.get("level")) if part)
        lines.append(f"{head} {item.get('event', '')}".strip())
        for error in item.get("error_detail") or []:
            lines.append(f"    {error.get('exc_type')}: {error.get('exc_value')}")
    return "\n".join(lines)
