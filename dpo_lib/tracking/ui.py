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
from pathlib import Path

from dpo_lib.tracking.target import resolve_target


def server_command(port: int, host: str = "127.0.0.1") -> list[str] | None:
    """``mlflow server`` over the resolved store, or None when the store is a server already."""
    target = resolve_target()
    if target.is_server:
        return None
    target.prepare()
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    command = [mlflow, "server", "--backend-store-uri", target.uri, "--host", host, "--port", str(port),
               "--workers", "1"]  # fmt: skip
    if target.artifact_location:
        command += ["--artifacts-destination", target.artifact_location]
    return command


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpo_lib.tracking.ui", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    command = server_command(args.port)
    if command is None:
        print(f"MLflow runs as a server: open {resolve_target().uri}")
        return 0
    print(f"MLflow UI over {resolve_target().uri}: http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": os.environ.get("MLFLOW_SERVER_ENABLE_JOB_EXECUTION",
                                                                                "false")}  # fmt: skip
    os.execve(command[0], command, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
