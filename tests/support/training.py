"""Fixtures for the tests that train: a tiny model, toy data, and configs that point at them.

Everything expensive is built once per session: the tiny model directory (a tokenizer is
trained for it, a few seconds) and the toy dataset. Each test composes its own config
through the real composition path (presets + overrides + the contract), with ``run_dir`` in
its own temporary directory.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dpo_lib.config import compose_config
from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.spec import TrainConfig
from dpo_lib.tiny_model import build_tiny_model

N_TOY_PAIRS = 200  # 180 for training, 20 held out (eval_fraction 0.1 in configs/datasets/toy.yaml)

# The per-pair metrics every train and eval report carries (metrics.json, the logs).
PAIR_METRICS = {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
                "logps/chosen", "logps/rejected"}  # fmt: skip

ComposeFn = Callable[..., TrainConfig]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.json"
    path.write_text(json.dumps(make_toy_pairs(N_TOY_PAIRS, seed=0), indent=1))
    return path


def compose_test_config(tiny_model_dir: Path, toy_dataset: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    """The real config path, pointed at the tiny model and toy data, small and quiet by default.

    Later overrides win, so a test can change any of the defaults below.
    """
    defaults = [
        "exp_name=test",
        f"model.name_or_path={tiny_model_dir}",
        f"datasets.toy.uri={toy_dataset}",
        f"run_dir={run_dir}",
        "max_steps=4",
        "batch_size=8",
        "warmup_steps=0",
        "log_every=2",
        "eval_every=0",
        "checkpoint_every=0",
        "trainer.device=cpu",
    ]
    return compose_config([*defaults, *overrides])


@pytest.fixture
def make_config(tiny_model_dir: Path, toy_dataset: Path, tmp_path: Path) -> ComposeFn:
    """``make_config("max_steps=10", ..., run_dir=PATH)``; run_dir defaults to ``tmp_path/"run"``."""

    def make(*overrides: str, run_dir: Path | None = None) -> TrainConfig:
        return compose_test_config(tiny_model_dir, toy_dataset, run_dir or tmp_path / "run", *overrides)

    return make


@pytest.fixture(scope="session")
def trained_run(tiny_model_dir: Path, toy_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short DPO run (30 steps, batch 8) shared by the tests that only read its results.

    Tests that write into a run directory (evaluate) copy it first.
    """
    from dpo_lib.training.recipe import train

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    cfg = compose_test_config(tiny_model_dir, toy_dataset, run_dir, "max_steps=30", "log_every=5", "eval_every=30")
    train(cfg)
    return run_dir


def unreadable_by_others(folder: Path) -> list[str]:
    """Entries under ``folder`` that another user (neither its owner nor in its group) could not read:
    files without o+r, folders without o+rx."""
    found = []
    for path in sorted(folder.rglob("*")):
        needed = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
        mode = path.stat().st_mode
        if mode & needed != needed:
            found.append(f"{path.relative_to(folder)} {stat.filemode(mode)}")
    return found
