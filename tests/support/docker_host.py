"""A Docker daemon and the CPU trainer image for the container tests, set up from nothing.

CI starts on a fresh machine with no registry: ``tests/provision-host.sh`` installs Debian's
docker.io, debootstrap and python3-venv (checked here, never installed); dockerd is started if
none answers (and stopped afterwards only then), and the trainer and Airflow images are built by
``containers/build-offline.sh`` from a debootstrapped base that is kept between runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO
from tests.support.host import require_commands

# docker.io runs the daemon; debootstrap builds the base; Debian's python3-venv resolves wheelhouses.
COMMANDS = ("dockerd", "docker", "debootstrap", "/usr/lib/python3.*/ensurepip/__init__.py")
TRAINER_IMAGE = "dpo-trainer:cpu-test"
AIRFLOW_IMAGE = "dpo-airflow:offline-test"
DOCKERD_PIDFILE = Path("/var/run/docker.pid")
START_TIMEOUT_S = 90.0


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def daemon_answers() -> bool:
    try:
        return docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextlib.contextmanager
def docker_daemon(log_file: Path) -> Iterator[None]:
    """A Docker daemon for the duration; started (and then stopped) here only if none answers."""
    require_commands(*COMMANDS)
    if daemon_answers():
        yield
        return
    _remove_stale_pidfile()
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not daemon_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start:\n{log_file.read_text(errors='replace')[-3000:]}")
            time.sleep(1.0)
        yield
    finally:
        proc.terminate()  # dockerd stops its containers and its own containerd
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _remove_stale_pidfile() -> None:
    """A dockerd that died without cleaning up leaves its pidfile, and a new one refuses to start."""
    try:
        pid = int(DOCKERD_PIDFILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        DOCKERD_PIDFILE.unlink(missing_ok=True)


class OfflineBuilds:
    """Both images built by ``containers/build-offline.sh`` at once (after the shared base image).

    Much of a cold build waits on the network, apt and pip, so two builds side by side take
    little more than the longer one. ``wait(image)`` returns the tag once that build succeeded.
    """

    def __init__(self, images: dict[str, str], log_dir: Path) -> None:
        base = subprocess.run(
            [str(REPO / "containers" / "base" / "build-base-image.sh")], capture_output=True, text=True, timeout=1800
        )
        if base.returncode != 0:
            raise RuntimeError(f"building the base image failed:\n{(base.stdout + base.stderr)[-5000:]}")
        self.tags = images
        self.logs = {image: log_dir / f"build-{image}.log" for image in images}
        self.procs = {}
        for image, tag in images.items():
            with open(self.logs[image], "wb") as log:
                self.procs[image] = subprocess.Popen(
                    [str(REPO / "containers" / "build-offline.sh"), image, tag],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip

    def wait(self, image: str) -> str:
        if self.procs[image].wait(timeout=1800) != 0:
            raise RuntimeError(f"building {self.tags[image]} failed:\n{self.logs[image].read_text()[-5000:]}")
        return self.tags[image]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.wait(timeout=1800)


def image_user(tag: str) -> str:
    return json.loads(docker("image", "inspect", "--format", "{{json .Config.User}}", tag).stdout)


def containers_with_labels(*labels: str) -> list[str]:
    """Ids of every container (running or not) carrying all ``labels`` (``key=value``)."""
    filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
    return docker("ps", "--all", "--quiet", "--no-trunc", *filters).stdout.split()
