"""Starting, watching and killing training processes, and finding any they leave behind (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from dpo_lib.training.checkpoint import list_checkpoints


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def newest_step(run_dir: Path) -> int:
    """The step of the newest complete checkpoint, 0 if there is none."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][0] if checkpoints else 0


def leftovers(run_dir: Path) -> list[str]:
    """Hidden temporaries of interrupted writes: checkpoints being saved or discarded, the final model."""
    found = [p.name for p in (run_dir / "checkpoints").glob(".*")] if (run_dir / "checkpoints").is_dir() else []
    return sorted(found + [p.name for p in [*run_dir.glob(".final.*"), *run_dir.glob(".discard-*")]])


def is_alive(pid: int) -> bool:
    """Whether ``pid`` runs: zombies are dead, only not yet reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # the state, the field after "(comm)"


def command_line(pid: int) -> str:
    """``pid``'s arguments joined by spaces; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def live_processes_mentioning(text: str) -> list[int]:
    """Processes (zombies excluded: they are dead, only not yet reaped) whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        if text in command_line(int(entry.name)) and is_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def parent_of(pid: int) -> int | None:
    """``pid``'s parent, None once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def trainers_of(path: Path) -> list[int]:
    """Live ``python -m dpo_lib train`` processes whose command names ``path``: a run's ``run_spec.json``
    (``train --spec PATH``, as a task runs it: bash execs its single command) or its run folder (``run_dir=PATH``).

    A trainer's own forks (a child between fork and exec carries its parent's command line) are not counted while
    that trainer lives; once it is gone they are trainers of their own, and counted.
    """
    found = [pid for pid in live_processes_mentioning(str(path)) if "dpo_lib train" in command_line(pid)]
    return [pid for pid in found if parent_of(pid) not in found]


def children_of(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def component_pid(launcher_pid: int, name: str) -> int | None:
    """The pid of the Airflow component (``scheduler``, ``api-server``, ...) the launcher runs now, None if none."""
    titles = (f"airflow {name}", f"airflow {name.replace('-', '_')}")  # the api-server retitles itself
    return next((pid for pid in children_of(launcher_pid) if any(t in command_line(pid) for t in titles)), None)


def kill_all(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` (processes this test started), ignoring those already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Training:
    """One ``python -m dpo_lib train`` process, its output in ``log`` (a file: a full pipe would block it)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log_path = log
        self._log: IO[bytes] = open(log, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=_env())

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill(self, pid: int | None = None) -> None:
        """SIGKILL the launched process (or ``pid``, one of its descendants) and reap it."""
        os.kill(pid or self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)
        self._log.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env
