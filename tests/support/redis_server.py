"""A throwaway Redis on loopback for tests (Debian's redis-server, from ``tests/provision-host.sh``)."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.host import require_commands
from tests.support.storage_emulator import free_port

START_TIMEOUT_S = 30.0


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Yield ``redis://127.0.0.1:<port>/0`` of a fresh server without persistence; stop it afterwards."""
    require_commands("redis-server")
    import redis

    root = Path(tempfile.mkdtemp(prefix="dpo-test-redis-"))
    port = free_port()
    with open(root / "redis.log", "ab") as log:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(root)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited:\n{(root / 'redis.log').read_text(errors='replace')[-2000:]}")
            try:
                redis.Redis.from_url(url, socket_timeout=2).ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not answer") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
