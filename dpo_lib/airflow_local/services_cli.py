"""``python -m dpo_lib services``: run Airflow's services for this project (``make api``).

Without flags it runs api-server, scheduler, dag-processor and triggerer in the foreground
until Ctrl-C. ``--ensure`` starts them in the background unless they already answer
(``make toy-trigger``), ``--stop`` stops a launcher started either way.

Settings come from the environment: AIRFLOW_HOME (default ``.airflow/`` in the repository),
AIRFLOW_PORT (8080), AIRFLOW_HOST (127.0.0.1), AIRFLOW_BASE_URL, AIRFLOW_ADMIN_USER (admin),
AIRFLOW_ADMIN_PASSWORD (generated once and kept in AIRFLOW_HOME when unset), DPO_GPU_SLOTS (1),
and any ``AIRFLOW__SECTION__KEY`` (e.g. ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` for PostgreSQL).
"""

from __future__ import annotations

import argparse
import sys

from dpo_lib.airflow_local.services import (
    ServiceConfig,
    ServicesError,
    ensure_running,
    health,
    run_services,
    stop_running,
    unhealthy_components,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--ensure", action="store_true", help="start in the background unless already up; wait")
    mode.add_argument("--stop", action="store_true", help="stop the services started for this AIRFLOW_HOME")
    mode.add_argument("--status", action="store_true", help="print the health of the running services")


def run(args: argparse.Namespace) -> int:
    try:
        config = ServiceConfig.from_env()
        if args.ensure:
            ensure_running(config)
            return 0
        if args.stop:
            stopped = stop_running(config)
            print("services stopped" if stopped else f"no services recorded in {config.airflow_home.pidfile}")
            return 0
        if args.status:
            down = unhealthy_components(health(config.local_url))
            print(f"{config.local_url}: " + ("healthy" if not down else f"not healthy: {', '.join(down)}"))
            return 0 if not down else 1
        return run_services(config)
    except ServicesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
