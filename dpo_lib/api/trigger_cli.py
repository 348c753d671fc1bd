"""``python -m dpo_lib trigger --conf FILE_OR_JSON [--wait]``: start a fine-tune through Airflow's REST API.

Prints the run's id, state and UI link; with ``--wait`` follows it to the end and prints the
final metrics (the ``evaluate`` task's result), or, when the run failed, which task failed
and the end of its log. Exit status: 0 queued or succeeded, 1 the run failed, 2 the
request was refused or Airflow could not be reached.

Reads AIRFLOW_URL (default http://localhost:$AIRFLOW_PORT, port 8080), AIRFLOW_ADMIN_USER and
AIRFLOW_ADMIN_PASSWORD (default: the one kept in the local AIRFLOW_HOME).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from dpo_lib.api.client import AirflowAPI, AirflowAPIError, run_metrics
from dpo_lib.orchestration.names import FINETUNE_DAG_ID

LOG_TAIL_LINES = 30


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", required=True, help="the request: a JSON object, or a file holding one")
    parser.add_argument("--wait", action="store_true", help="wait for the run to finish and print its metrics")
    parser.add_argument("--dag-id", default=FINETUNE_DAG_ID, help=f"the DAG to trigger (default {FINETUNE_DAG_ID})")
    parser.add_argument("--run-id", default=None, help="a run id of your own (default: Airflow's manual__<time>)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits at most (default 3600)")
    parser.add_argument("--poll", type=float, default=3.0, help="seconds between state checks (default 3)")


class ConfError(ValueError):
    """``--conf`` is neither a JSON object nor a readable file holding one."""


def read_conf(value: str) -> dict[str, Any]:
    """``value`` as JSON, or the JSON in the file it names."""
    text = value if value.lstrip().startswith("{") else _read_file(value)
    try:
        conf = json.loads(text)
    except ValueError as exc:
        raise ConfError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(conf, dict):
        raise ConfError("--conf must be a JSON object")
    return conf


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfError(f"--conf {path!r} is neither JSON nor a readable file ({reason})") from None


def run(args: argparse.Namespace) -> int:
    try:
        conf = read_conf(args.conf)
    except ConfError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2  # refused before anything was asked of Airflow, like a bad request
    try:
        api = AirflowAPI.login()
        api.wait_for_dag(args.dag_id)
        run = api.trigger(args.dag_id, conf, run_id=args.run_id)
        print(f"dag_run_id: {run.dag_run_id}")
        print(f"state: {_state(run)}")
        print(f"url: {api.url}/dags/{args.dag_id}/runs/{run.dag_run_id}", flush=True)
        if not args.wait:
            return 0
        final = api.wait(
            args.dag_id,
            run.dag_run_id,
            timeout_s=args.timeout,
            poll_s=args.poll,
            on_change=lambda r: print(f"state: {_state(r)}", flush=True),
        )
        if _state(final) != "success":
            print_failure(api, args.dag_id, run.dag_run_id)
            return 1
        metrics = run_metrics(api, args.dag_id, run.dag_run_id)
        print("metrics:")
        print(json.dumps(metrics, indent=2, sort_keys=True) if metrics is not None else "  (none reported)")
        return 0
    except AirflowAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def print_failure(api: AirflowAPI, dag_id: str, run_id: str) -> None:
    """Which tasks failed, with the end of each one's last log, and which never ran because of them."""
    tis = api.task_instances(dag_id, run_id)
    for ti in tis:
        if _state(ti) == "failed":
            print(f"task {ti.task_id} failed (try {ti.try_number}); the end of its log:", file=sys.stderr)
            for line in api.task_log(dag_id, run_id, ti.task_id, ti.try_number).splitlines()[-LOG_TAIL_LINES:]:
                print(f"  {line}", file=sys.stderr)
    skipped = [ti.task_id for ti in tis if _state(ti) == "upstream_failed"]
    if skipped:
        print(f"not run (upstream failed): {', '.join(skipped)}", file=sys.stderr)


def _state(obj: Any) -> str:
    state = obj.state
    return str(getattr(state, "value", state))
