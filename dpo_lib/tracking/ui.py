"""``python -m dpo_lib.tracking.ui``: the MLflow UI over the store runs log to (what ``make mlflow`` runs).

With ``MLFLOW_TRACKING_URI`` naming a server, that server is the UI: this prints its address. Otherwise it
runs ``mlflow server`` on loopback over the embedded store (``$DPO_ARTIFACTS_ROOT/_mlflow/``), in the
foreground until Ctrl-C. Without a server of its own, a run's ``tracking.json`` has no ``ui_url``: the
run is at ``http://127.0.0.1:PORT/#/experiments/<experiment_id>/runs/<run_id>`` here.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from dpo_lib.tracking.target import resolve_target


def server_command(port: int, host: str = "127.0.0.1", mlflow: str = "mlflow") -> list[str] | None:
    """``mlflow server`` over the resolved store, or None when the store is a server already.

    ``mlflow``: the command of an environment with the full ``mlflow`` package (``make mlflow-server``'s
    ``.venv-mlflow/bin/mlflow``); the client, ``mlflow-skinny``, cannot serve.
    """
    target = resolve_target()
    if target.is_server:
        return None
    target.prepare()
    command = [mlflow, "server", "--backend-store-uri", target.uri, "--host", host, "--port", str(port),
               "--workers", "1"]  # fmt: skip
    if target.artifact_location:
        command += ["--artifacts-destination", target.artifact_location]
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpo_lib.tracking.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--mlflow", default="mlflow", help="the mlflow command of an environment with the full "
                        "mlflow package (default: the one on PATH; `make mlflow` passes .venv-mlflow's)")  # fmt: skip
    args = parser.parse_args(argv)
    command = server_command(args.port, mlflow=args.mlflow)
    if command is None:
        print(f"MLflow runs as a server: open {resolve_target().uri}")
        return 0
    if shutil.which(command[0]) is None:
        print(f"error: no {command[0]} command: `make mlflow-server` installs the MLflow server", file=sys.stderr)
        return 2
    print(f"MLflow UI over {resolve_target().uri}: http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                                "false")}  # fmt: skip
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
