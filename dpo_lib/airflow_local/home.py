"""The files the service launcher keeps in AIRFLOW_HOME: secrets, the admin password, pid and log.

Secrets are generated once and kept (mode 0600) so restarts keep tokens valid and every
component signs and checks JWTs with the same key. They live in AIRFLOW_HOME, which is
outside git (``.airflow/`` is ignored), never in the repository.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

SECRETS_FILE = "dpo-secrets.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json"
PIDFILE = "dpo-services.pid"
READY_FILE = "dpo-services.ready"
LOCKFILE = "dpo-services.lock"
LOGFILE = "dpo-services.log"


@dataclass(frozen=True)
class AdminCredentials:
    """The SimpleAuthManager admin; ``generated`` when the password was made up by :func:`write_admin`."""

    username: str
    password: str
    generated: bool = False


@dataclass(frozen=True)
class AirflowHome:
    """Paths inside one AIRFLOW_HOME."""

    path: Path

    @property
    def secrets_file(self) -> Path:
        return self.path / SECRETS_FILE

    @property
    def passwords_file(self) -> Path:
        return self.path / PASSWORDS_FILE

    @property
    def pidfile(self) -> Path:
        return self.path / PIDFILE

    @property
    def ready_file(self) -> Path:
        """Written by the launcher once every component is healthy and the ``gpu`` pool exists."""
        return self.path / READY_FILE

    @property
    def logfile(self) -> Path:
        return self.path / LOGFILE

    @property
    def lockfile(self) -> Path:
        return self.path / LOCKFILE

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def lock(self) -> int | None:
        """Claim this home for one launcher: an open descriptor holding the lock, or None if taken.

        The lock lives as long as the descriptor (the launcher's process), so it is released
        even when the launcher is killed: a stale pid or ready file can never block a restart.
        """
        self.create()
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def launcher_running(self) -> bool:
        """Whether a launcher holds this home's lock right now."""
        if not self.path.exists():
            return False
        fd = self.lock()
        if fd is None:
            return True
        os.close(fd)
        return False

    def secrets(self) -> dict[str, str]:
        """The JWT secret and the api secret key, generated on first use and kept."""
        stored = _read_json(self.secrets_file)
        wanted = {"jwt_secret": stored.get("jwt_secret"), "api_secret_key": stored.get("api_secret_key")}
        if all(wanted.values()):
            return wanted
        fresh = {name: value or secrets.token_urlsafe(48) for name, value in wanted.items()}
        _write_private_json(self.secrets_file, {**stored, **fresh})
        return fresh

    def write_admin(self, username: str, password: str | None) -> AdminCredentials:
        """Record the admin's password in SimpleAuthManager's passwords file.

        An explicit ``password`` always wins (so changing AIRFLOW_ADMIN_PASSWORD takes effect
        on restart); without one the stored password is kept, or a random one is generated.
        """
        passwords = _read_json(self.passwords_file)
        generated = False
        if password:
            passwords[username] = password
        elif not passwords.get(username):
            passwords[username] = secrets.token_urlsafe(12)
            generated = True
        _write_private_json(self.passwords_file, passwords)
        return AdminCredentials(username, passwords[username], generated)

    def stored_password(self, username: str) -> str | None:
        """The admin password kept in this home, for local clients that were given none."""
        return _read_json(self.passwords_file).get(username)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except json.JSONDecodeError as exc:
        raise RuntimeError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    if not isinstance(value, dict):
        raise RuntimeError(f"{path} must hold a JSON object; fix or delete it")
    return value


def _write_private_json(path: Path, value: dict) -> None:
    """Write ``value`` to ``path`` readable by the owner only, replacing it atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
