"""Multi-process trainers under torchrun: ``python -m dpo_lib train trainer=fsdp ...`` re-runs itself
as ``python -m torch.distributed.run ... -m dpo_lib train ...``, one process per device.

The launcher passes SIGTERM, SIGINT and SIGHUP on to torchrun and waits for it; torchrun gets
SIGTERM when the launcher dies (it then stops its workers), and each worker dies with torchrun
(:func:`dpo_lib.processes.bind_to_parent`), so no process outlives the one that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

from dpo_lib.processes import die_with_parent, prctl
from dpo_lib.spec import TrainerConfig

_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
LOOPBACK = "127.0.0.1"  # one node: its processes meet on the loopback interface


def process_count(trainer: TrainerConfig) -> int:
    """``trainer.nproc``, else one per visible GPU, else 2 CPU processes talking gloo."""
    if getattr(trainer, "nproc", None):
        return int(trainer.nproc)
    import torch

    if trainer.device != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 2  # enough to exercise the distributed path


def relaunch(trainer: TrainerConfig, argv: list[str], command: str = "train") -> int:
    """Run ``python -m torch.distributed.run ... -m dpo_lib <command> <argv>``; returns its exit status."""
    # --local-addr: the rendezvous store is advertised at the loopback address, not at this host's
    # name, which does not resolve in a container without a network (DPO_DOCKER_NETWORK=none).
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--local-addr={LOOPBACK}",
            f"--nproc_per_node={process_count(trainer)}", "-m", "dpo_lib", command, *argv]  # fmt: skip
    print(f"launching: {' '.join(args)}", flush=True)
    launcher, prctl_fn = os.getpid(), prctl()
    proc = subprocess.Popen(args, preexec_fn=lambda: die_with_parent(signal.SIGTERM, launcher, prctl_fn))

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
