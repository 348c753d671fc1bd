"""Metric names, their running means, and ``run_dir/metrics.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from dpo_lib.io import atomic_write_json
from dpo_lib.losses import LossOutput
from dpo_lib.training.logps import PairLogps

METRICS_FILE = "metrics.json"


def pair_metrics(out: LossOutput, logps: PairLogps) -> dict[str, torch.Tensor]:
    """Per-pair values whose batch means are the reported metrics (rewards are β·(π − ref))."""
    return {
        "loss": out.losses.detach(),
        "rewards/chosen": out.chosen_rewards,
        "rewards/rejected": out.rejected_rewards,
        "rewards/accuracies": (out.chosen_rewards > out.rejected_rewards).float(),
        "rewards/margins": out.chosen_rewards - out.rejected_rewards,
        "logps/chosen": logps.chosen.detach(),
        "logps/rejected": logps.rejected.detach(),
    }


class MeanTracker:
    """Running means over pairs, so uneven batch sizes weigh correctly.

    The sums stay on the values' device: adding never waits for the GPU, which would stall
    the queue of work every micro-batch. Reading them (``totals``) is the one sync, at log time.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, values: dict[str, torch.Tensor]) -> None:
        for name, v in values.items():
            total = v.detach().float().sum()
            self.sums[name] = self.sums[name] + total if name in self.sums else total
        self.count += len(next(iter(values.values())))

    def totals(self, device: torch.device | None = None) -> tuple[list[str], torch.Tensor]:
        """Metric names and one tensor of their sums followed by the pair count, on ``device``."""
        names = sorted(self.sums)
        sums = [self.sums[n].to(device) for n in names]
        return names, torch.stack([*sums, torch.tensor(float(self.count), device=device)])


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def update_metrics(run_dir: str | Path, **parts: dict[str, Any]) -> dict[str, Any]:
    """Replace the given top-level parts (``train=...``, ``eval=...``) of metrics.json atomically."""
    metrics = read_metrics(run_dir)
    metrics.update(parts)
    atomic_write_json(Path(run_dir) / METRICS_FILE, metrics)
    return metrics
