"""Install Debian packages a test needs (docker.io, redis-server, postgresql, ...) when missing.

The container and distributed-run tests exercise real daemons, and CI starts from a fresh
machine, so the tests install what they use, as ``make test`` promises. This needs root and
Debian's apt mirror; anything else is a clear failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_updated = False


def ensure_commands(packages: dict[str, str]) -> None:
    """Install the package behind every command that is not on PATH (``{"dockerd": "docker.io"}``).

    A command may be an absolute path (``/usr/lib/postgresql/15/bin/postgres``) for programs
    that Debian keeps off PATH.
    """
    missing = sorted({package for command, package in packages.items() if not _found(command)})
    if not missing:
        return
    if os.geteuid() != 0:
        raise RuntimeError(f"these tests need {', '.join(missing)}; install them (apt-get install) or run as root")
    global _updated
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        _run(["apt-get", "update", "-q"], env)
        _updated = True
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env)


def _found(command: str) -> bool:
    return Path(command).exists() if command.startswith("/") else shutil.which(command) is not None


def _run(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{(result.stdout + result.stderr)[-3000:]}")
