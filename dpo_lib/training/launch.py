"""Start torchrun for multi-process strategies, so one command line serves every trainer.

``python -m dpo_lib train trainer=fsdp ...`` run by a user, the Airflow local runner or
the trainer container re-executes itself under ``torch.distributed.run`` with one
process per device; inside torchrun (``LOCAL_RANK`` set) it trains directly.
"""

from __future__ import annotations

import os
import sys
from typing import Any

MULTI_PROCESS = {"fsdp", "tensor_parallel"}


def needs_launch(cfg: dict[str, Any]) -> bool:
    return cfg["trainer"]["name"] in MULTI_PROCESS and "LOCAL_RANK" not in os.environ


def process_count(trainer_cfg: dict[str, Any]) -> int:
    if trainer_cfg.get("nproc"):
        return int(trainer_cfg["nproc"])
    import torch

    if trainer_cfg.get("device") != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count()
    return 2  # CPU processes talking gloo: enough to exercise the distributed path


def relaunch_under_torchrun(cfg: dict[str, Any], argv: list[str], command: str = "train") -> int:
    """Run ``python -m torch.distributed.run ... -m dpo_lib <command> <argv>``; returns its exit status."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={process_count(cfg['trainer'])}", "-m", "dpo_lib", command, *argv]  # fmt: skip
    print(f"launching: {' '.join(command)}", flush=True)
    return subprocess.call(command)
