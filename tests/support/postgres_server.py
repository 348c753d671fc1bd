"""A throwaway PostgreSQL server on loopback for tests (Debian's postgresql, from ``tests/provision-host.sh``).

``with postgres_server() as pg: pg.url`` gives a SQLAlchemy URL of a fresh ``airflow``
database owned by a password-authenticated role, on a free port of 127.0.0.1. The cluster
lives in a temporary folder and is removed afterwards. PostgreSQL refuses to run as root, so
as root the server runs as Debian's ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.host import require_commands
from tests.support.storage_emulator import free_port

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """For Airflow's ``[database] sql_alchemy_conn``."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    @property
    def celery_result_backend(self) -> str:
        """For ``[celery] result_backend`` (Celery's database backend, through SQLAlchemy)."""
        return f"db+postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def connect(self, database: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname=database or self.database
        )


def postgres_bindir() -> Path:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<version>/bin."""
    require_commands("/usr/lib/postgresql/*/bin/postgres", "/usr/lib/postgresql/*/bin/initdb")
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent


@contextlib.contextmanager
def postgres_server(
    user: str = "airflow", password: str = "airflow-test", database: str = "airflow"
) -> Iterator[Postgres]:
    bindir = postgres_bindir()
    run_as = {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}
    # In /tmp itself, not under pytest's private (0700) folders the postgres user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="dpo-test-pg-"))
    proc = None
    try:
        if run_as:
            shutil.chown(root, "postgres", "postgres")
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        if run_as:
            shutil.chown(pwfile, "postgres", "postgres")
        _check([str(bindir / "initdb"), "-D", str(root / "db"), "-U", user, f"--pwfile={pwfile}",
                "--auth=scram-sha-256", "--encoding=UTF8", "--no-sync"], run_as)  # fmt: skip
        port = free_port()
        with open(root / "server.log", "ab") as log:
            proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(root / "db"), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={root}", "-c", "fsync=off", "-c", "synchronous_commit=off"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **run_as,
            )  # fmt: skip
        server = Postgres("127.0.0.1", port, user, password, database)
        _wait_ready(server, proc, root / "server.log")
        conn = server.connect("postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
        conn.close()
        yield server
    finally:
        if proc is not None:
            proc.terminate()  # SIGTERM: smart shutdown once clients are gone; then SIGINT: fast
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.send_signal(2)
                proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def _check(args: list[str], run_as: dict) -> None:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **run_as)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _wait_ready(server: Postgres, proc: subprocess.Popen, log: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited ({proc.returncode}):\n{log.read_text(errors='replace')[-3000:]}")
        try:
            server.connect("postgres").close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready:\n{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(0.5)
