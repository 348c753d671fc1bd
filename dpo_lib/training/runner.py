"""Pick the trainer for ``cfg["trainer"]["name"]`` and run it."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def build_trainer(cfg: dict[str, Any]):
    from dpo_lib.training.trainer import BasicTrainer

    name = cfg["trainer"]["name"]
    if name == "basic":
        return BasicTrainer(cfg)
    from dpo_lib.training.distributed import FSDPTrainer, TensorParallelTrainer

    return {"fsdp": FSDPTrainer, "tensor_parallel": TensorParallelTrainer}[name](cfg)


def train(cfg: dict[str, Any]) -> dict[str, float]:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    trainer = build_trainer(cfg)
    log.info("experiment %s: %s trainer, loss %s, run_dir %s", cfg["exp_name"], cfg["trainer"]["name"],
             cfg["loss"]["name"], cfg["run_dir"])  # fmt: skip
    trainer.setup()
    try:
        return trainer.train()
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
