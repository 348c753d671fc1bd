"""A real ``mlflow server`` on loopback (SQLite behind it), started and stopped by the tests that need one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.storage_emulator import free_port

# The full mlflow's venv (`make mlflow-server`, which `make test` runs): .venv has only the client.
MLFLOW = Path(__file__).resolve().parents[3] / ".venv-mlflow" / "bin" / "mlflow"
START_TIMEOUT_S = 240.0


class MlflowServer:
    """``mlflow server`` on a fixed loopback port and database, so it can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not MLFLOW.exists():
            raise RuntimeError(f"no {MLFLOW}: `make mlflow-server` installs the MLflow server these tests run")
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the server writes to it while it runs
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner processes
        env.pop("MLFLOW_TRACKING_URI", None)
        self.proc = subprocess.Popen(
            [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-3000:]}")
            if self.answers():
                return
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer in {START_TIMEOUT_S:.0f} s")

    def answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server and the uvicorn worker it started (its own process group)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=20)
        while self.answers():  # a worker outliving its parent would keep the port
            time.sleep(0.1)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracking_to(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> MlflowServer:
    """MLFLOW_TRACKING_URI naming the server (started again if a test stopped it)."""
    if not mlflow_server.answers():
        mlflow_server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    return mlflow_server
