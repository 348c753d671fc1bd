"""Fixtures for the fault tests: the command line that trains the tiny model on the toy data."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def train_argv(tiny_model_dir: Path, toy_dataset: Path):
    """``train_argv(run_dir, "max_steps=8", ...)``: ``python -m dpo_lib train`` on the tiny model, small and quiet."""

    def argv(run_dir: Path, *overrides: str) -> list[str]:
        return [
            sys.executable, "-m", "dpo_lib", "train",
            "exp_name=faults", f"model.name_or_path={tiny_model_dir}", f"datasets.toy.uri={toy_dataset}",
            f"run_dir={run_dir}", "batch_size=4", "warmup_steps=3", "log_every=1", "eval_every=0",
            "trainer.device=cpu", *overrides,
        ]  # fmt: skip

    return argv
