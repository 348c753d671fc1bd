"""``tests/provision-host.sh`` and the fixtures that rely on it agree: every command a fixture requires is in
the script's table, a provisioned machine passes its check, and a missing command fails naming the script."""

from __future__ import annotations

import subprocess

import pytest

from tests.support import docker_host, host


def test_the_script_installs_every_command_the_fixtures_require():
    table = host.provisioned_commands()
    required = {*docker_host.COMMANDS, "docker-compose", "redis-server", "/usr/lib/postgresql/*/bin/postgres",
                "/usr/lib/postgresql/*/bin/initdb", host.CHROMIUM}  # fmt: skip
    assert required <= set(table), required - set(table)
    assert set(table.values()) == {"docker.io", "debootstrap", "python3-venv", "docker-compose", "postgresql",
                                   "redis-server", "chromium"}  # fmt: skip


def test_this_machine_is_provisioned_and_the_check_needs_no_root():
    result = subprocess.run(["bash", str(host.PROVISION_SCRIPT), "--check"], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for command in host.provisioned_commands():
        assert f"present: {command}" in result.stdout
    assert result.stdout.rstrip().endswith("nothing to install")


def test_a_missing_command_fails_naming_the_package_and_the_script(monkeypatch):
    monkeypatch.setattr(host, "found", lambda command: command != "redis-server")
    with pytest.raises(
        host.HostNotProvisioned, match=r"lacks redis-server \(Debian: redis-server\).*provision-host\.sh"
    ):
        host.require_commands("dockerd", "redis-server")
    with pytest.raises(ValueError, match="not in provision-host.sh's table"):
        host.require_commands("no-such-program")
