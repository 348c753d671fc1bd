"""Start and stop gcp-storage-emulator for tests, as a plain context manager.

Kept outside conftest.py so any test package (storage, DAG runs, end-to-end
pipeline tests) can reuse it: ``with storage_emulator() as emu: ...`` sets nothing
globally; callers export ``emu.env`` (``STORAGE_EMULATOR_HOST``) where needed.

The emulator runs in a subprocess rather than a thread: it configures the root
logger on start and serves one request at a time, and a subprocess keeps both
away from the test process and is torn down with certainty.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

DEFAULT_BUCKET = "dpo-test-bucket"
STARTUP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Emulator:
    """A running emulator: its base URL, the bucket it created and the env a client needs."""

    host: str
    port: int
    bucket: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; a tiny race remains, handled by retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(url: str, bucket: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/storage/v1/b/{bucket}", timeout=0.5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start(host: str, port: int, bucket: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "gcp_storage_emulator", "start",
        "--host", host, "--port", str(port), "--in-memory", "--default-bucket", bucket, "--quiet",
    ]  # fmt: skip
    # The emulator reads HOST/PORT from the environment as defaults; keep ours explicit.
    env = {k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST",)}
    # Output goes to a file, not a pipe: an unread pipe that fills up would block the server.
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def storage_emulator(
    bucket: str = DEFAULT_BUCKET, host: str = "127.0.0.1", attempts: int = 3, port: int | None = None
) -> Iterator[Emulator]:
    """Run an in-memory emulator with ``bucket`` on a free loopback port until the block exits.

    ``port`` pins the port, for clients configured before the emulator starts.
    """
    last_error = ""
    pinned = port
    for _ in range(attempts):
        port = pinned or free_port(host)
        url = f"http://{host}:{port}"
        with tempfile.TemporaryFile() as log:
            proc = _start(host, port, bucket, log)
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while proc.poll() is None and time.monotonic() < deadline and not _answers(url, bucket):
                time.sleep(0.05)
            if proc.poll() is None and _answers(url, bucket):
                try:
                    yield Emulator(host=host, port=port, bucket=bucket, env={"STORAGE_EMULATOR_HOST": url})
                finally:
                    _stop(proc)
                return
            _stop(proc)
            log.seek(0)
            last_error = log.read().decode(errors="replace")[-2000:] or "no answer before the timeout"
    raise RuntimeError(f"gcp-storage-emulator did not start after {attempts} attempts: {last_error}")
