"""Fixtures for the fault tests: a tiny model and toy data on disk, and the command line that trains on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.tiny_model import build_tiny_model

N_TOY_PAIRS = 200


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("faults-model") / "tiny")


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults-data") / "toy.json"
    path.write_text(json.dumps(make_toy_pairs(N_TOY_PAIRS, seed=0), indent=1))
    return path


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
