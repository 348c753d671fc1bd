"""The host programs the system and fault tests run (dockerd, postgres, redis-server, ...), checked, never installed.

``tests/provision-host.sh`` installs them (``make test`` runs it before pytest; it needs root and
Debian's apt mirror). A fixture calls :func:`require_commands` first, so a machine that was not
provisioned fails at once with the script to run, never with a confusing error later, and never
with a skip.
"""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

PROVISION_SCRIPT = Path(__file__).resolve().parents[1] / "provision-host.sh"


class HostNotProvisioned(RuntimeError):
    """A command the tests need is missing from this machine."""


def provisioned_commands() -> dict[str, str]:
    """``{command: Debian package}`` from the script's own table (between ``: <<'TABLE'`` and ``TABLE``)."""
    text = PROVISION_SCRIPT.read_text()
    table = text.split(": <<'TABLE'\n", 1)[1].split("\nTABLE\n", 1)[0]
    return {line.split()[0]: line.split()[1] for line in table.splitlines() if line.strip()}


def require_commands(*commands: str) -> None:
    """Fail naming the provisioning script unless every one of ``commands`` (as the script's table names
    them: a program on PATH, or an absolute path that may hold a glob) is on this machine."""
    known = provisioned_commands()
    unknown = [command for command in commands if command not in known]
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not in {PROVISION_SCRIPT.name}'s table; add them there")
    missing = [command for command in commands if not found(command)]
    if missing:
        packages = sorted({known[command] for command in missing})
        raise HostNotProvisioned(
            f"this machine lacks {', '.join(missing)} (Debian: {', '.join(packages)}); "
            f"provision it first, as `make test` does: sudo {PROVISION_SCRIPT}"
        )


def found(command: str) -> bool:
    return bool(glob.glob(command)) if command.startswith("/") else shutil.which(command) is not None


CHROMIUM = "chromium"  # Debian's package: tests/integration/ui drives it with Playwright (no browser download)


def chromium_executable() -> str:
    """The path of Debian's Chromium for Playwright's ``executable_path``; fails naming the script if it is missing."""
    require_commands(CHROMIUM)
    return str(shutil.which(CHROMIUM))
