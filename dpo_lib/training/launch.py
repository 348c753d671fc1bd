"""Start torchrun for multi-process strategies, so one command line serves every trainer.

``python -m dpo_lib train trainer=fsdp ...`` run by a user, the Airflow local runner or
the trainer container re-executes itself under ``torch.distributed.run`` with one
process per device; inside torchrun (``LOCAL_RANK`` set) it trains directly.

No process may outlive the one that started it. torchrun starts each worker in a session
of its own, so neither a signal to the launcher's process group (what Airflow sends to a
task it stops) nor the death of torchrun reaches the workers by itself; a worker left
running would keep writing into the run directory while Airflow's retry resumes from it.
So the chain is tied together with Linux's parent-death signal: torchrun gets SIGTERM
when the launcher dies (it then stops its workers), each worker gets SIGKILL when torchrun
dies; and the launcher passes SIGTERM, SIGINT and SIGHUP on to torchrun and waits for it.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

MULTI_PROCESS = {"fsdp", "tensor_parallel"}
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LOOPBACK = "127.0.0.1"  # one node: its processes meet on the loopback interface


def needs_launch(cfg: dict[str, Any]) -> bool:
    return cfg["trainer"]["name"] in MULTI_PROCESS and "LOCAL_RANK" not in os.environ


def process_count(trainer_cfg: dict[str, Any]) -> int:
    if trainer_cfg.get("nproc"):
        return int(trainer_cfg["nproc"])
    import torch

    if trainer_cfg.get("device") != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 2  # CPU processes talking gloo: enough to exercise the distributed path


def _prctl() -> Any:
    """libc's ``prctl``, or None off Linux. Resolved before any fork: a forked child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    return ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(sig: int = signal.SIGKILL, expected_parent: int | None = None, prctl: Any = None) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux; elsewhere a no-op).

    If the parent is already gone (it is no longer ``expected_parent``), exit at once: the
    signal would never come.
    """
    if prctl is None:
        prctl = _prctl()
    if prctl is None:
        return
    parent = os.getppid() if expected_parent is None else expected_parent
    if prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return  # not permitted here (seccomp): nothing better to do than carry on
    if os.getppid() != parent:
        os._exit(128 + int(sig))


def bind_worker_to_torchrun() -> None:
    """In a worker started by torchrun: die with torchrun. Called first thing by ``python -m dpo_lib``."""
    if "LOCAL_RANK" in os.environ and "TORCHELASTIC_RUN_ID" in os.environ:
        die_with_parent(signal.SIGKILL)


def relaunch_under_torchrun(cfg: dict[str, Any], argv: list[str], command: str = "train") -> int:
    """Run ``python -m torch.distributed.run ... -m dpo_lib <command> <argv>``; returns its exit status."""
    import subprocess

    # --local-addr: the rendezvous store is advertised at the loopback address, not at this host's
    # name, which does not resolve in a container without a network (DPO_DOCKER_NETWORK=none).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--local-addr={LOOPBACK}",
               f"--nproc_per_node={process_count(cfg['trainer'])}", "-m", "dpo_lib", command, *argv]  # fmt: skip
    print(f"launching: {' '.join(command)}", flush=True)
    launcher, prctl = os.getpid(), _prctl()
    proc = subprocess.Popen(command, preexec_fn=lambda: die_with_parent(signal.SIGTERM, launcher, prctl))

    def forward(signum: int, _frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        returncode = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return returncode if returncode >= 0 else 128 - returncode  # killed by signal N: 128 + N, as shells say
