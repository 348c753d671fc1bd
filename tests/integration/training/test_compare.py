"""The champion gate both ways on real models: ``compare`` evaluates the challenger and the champion on the
same held-out pairs of the challenger's run, and the gate promotes the better one only.

A well-trained tiny model (30 steps) and a barely trained one (1 step at a tiny learning rate) take turns
as challenger and champion. ``promote``'s registry side is tested on a real registry in
tests/unit/tracking/test_gate.py; this is the side that needs torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dpo_lib.results.compare import compare
from dpo_lib.results.gate import decide
from dpo_lib.spec import TrainConfig

pytestmark = pytest.mark.slow
METRIC = "loss"  # lower is better; the weak model's one tiny step already orders every pair right


@pytest.fixture(scope="module")
def weak_run(tiny_model_dir: Path, toy_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from dpo_lib.training.recipe import train
    from tests.support.training import compose_test_config

    run_dir = tmp_path_factory.mktemp("weak") / "run"
    train(compose_test_config(tiny_model_dir, toy_dataset, run_dir, "max_steps=1", "lr=1e-7"))
    return run_dir


def judged(run_dir: Path, champion_dir: Path, tmp_path: Path) -> tuple[dict, str]:
    """compare() of the run at ``run_dir`` (copied: compare writes samples.json) against ``champion_dir``."""
    copy = tmp_path / "challenger"
    shutil.copytree(run_dir, copy)
    saved = json.loads((copy / "config.json").read_text())
    config = TrainConfig.model_validate({**saved, "run_dir": str(copy)})
    champion = {"version": "1", "path": str(champion_dir / "final")}
    comparison = compare(config, copy / "final", champion)
    samples = json.loads((copy / "samples.json").read_text())
    assert len(samples) == 4 and all(isinstance(row["champion"], str) for row in samples)
    verdict = decide(METRIC, 0.0, comparison["challenger"][METRIC], comparison["champion"][METRIC])
    return comparison, verdict.decision


def test_a_better_challenger_is_promoted_and_a_worse_one_kept(trained_run, weak_run, tmp_path):
    strong, promoted = judged(trained_run, weak_run, tmp_path / "a")
    weak, kept = judged(weak_run, trained_run, tmp_path / "b")
    assert strong["not_compared"] is None and weak["not_compared"] is None
    assert strong["n_pairs"] == weak["n_pairs"] > 0  # the same held-out pairs (same data, seed and split)
    # Each model scores the same on those pairs whichever role it plays: one evaluation, two seats.
    assert strong["challenger"][METRIC] == pytest.approx(weak["champion"][METRIC])
    assert weak["challenger"][METRIC] == pytest.approx(strong["champion"][METRIC])
    assert strong["challenger"][METRIC] < weak["challenger"][METRIC]
    assert (promoted, kept) == ("promoted", "kept")
