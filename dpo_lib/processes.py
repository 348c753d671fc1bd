"""No process may outlive the one that started it: Linux's parent-death signal, tied along every chain.

* ``python -m dpo_lib`` started by an Airflow task (``EXIT_WITH_PARENT_ENV`` set) gets SIGTERM when
  the task process dies, so a crashed scheduler never leaves a trainer writing into a run folder
  that the task's retry resumes from.
* A worker started by torchrun gets SIGKILL when torchrun dies (torchrun starts each worker in a
  session of its own, so no signal to a process group reaches it).

No torch here: every command calls :func:`bind_to_parent` first.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

# Set (to "1") by the local runner for the commands an Airflow task runs.
EXIT_WITH_PARENT_ENV = "DPO_EXIT_WITH_PARENT"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def prctl() -> Any:
    """libc's ``prctl``, or None off Linux. Resolve it before any fork: a forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None, prctl_fn: Any = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; elsewhere a no-op).

    If the parent is already gone (it is no longer ``expected_parent``), exit at once: the
    signal would never come.
    """
    if prctl_fn is None:
        prctl_fn = prctl()
    if prctl_fn is None:
        return
    parent = os.getppid() if expected_parent is None else expected_parent
    if prctl_fn(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return  # not permitted here (seccomp): nothing better to do than carry on
    if os.getppid() != parent:
        os._exit(128 + int(sig))


def bind_to_parent(env: dict[str, str] | None = None) -> None:
    """Called first by ``python -m dpo_lib``: die with the Airflow task or the torchrun that started us."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env and "TORCHELASTIC_RUN_ID" in env:
        die_with_parent(signal.SIGKILL)  # a worker torchrun started must not outlive it
    elif env.get(EXIT_WITH_PARENT_ENV) == "1" and "LOCAL_RANK" not in env:
        die_with_parent(signal.SIGTERM)  # started by an Airflow task: must not outlive it
