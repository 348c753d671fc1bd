"""``python -m dpo_lib evaluate --run-dir DIR`` (dpo_lib/training/evaluate.py) on a short trained run."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_lib.cli import main
from tests.conftest import REPO as REPO_ROOT
from tests.support.training import N_TOY_PAIRS, PAIR_METRICS

EVAL_METRICS = PAIR_METRICS | {"logps/accuracies"}


def test_evaluate_writes_policy_and_reference_metrics_and_prints_them_last(trained_run: Path, tmp_path: Path):
    # Evaluate a copy somewhere else (the shared run stays as it was), whose dataset came from a
    # remote URI that training staged under run_dir/datasets/: the moved run must use its own
    # staged copy, not the run_dir recorded in config.json (which would mean downloading again).
    run_dir = tmp_path / "moved-run"
    shutil.copytree(trained_run, run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    staged = run_dir / "datasets" / "toy" / "prefs.json"
    staged.parent.mkdir(parents=True)
    shutil.copy(cfg["datasets"]["toy"]["uri"], staged)
    cfg["datasets"]["toy"]["uri"] = "gs://dpo-tests-no-such-bucket/prefs.json"
    (run_dir / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_lib", "evaluate", "--run-dir", str(run_dir)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert printed == metrics

    evaluation = metrics["eval"]
    assert EVAL_METRICS | {"reference", "n_pairs", "step"} == set(evaluation)
    assert evaluation["step"] == metrics["train"]["step"]
    assert evaluation["n_pairs"] == round(N_TOY_PAIRS * 0.1)
    reference = evaluation["reference"]
    assert EVAL_METRICS - {"rewards/accuracies"} == set(reference)  # 0 by construction: not reported
    # the reference against itself: zero rewards and the loss at log 2
    assert reference["rewards/chosen"] == reference["rewards/rejected"] == 0
    assert reference["loss"] == pytest.approx(math.log(2), abs=1e-6)
    # the trained policy beats it on held-out pairs
    assert evaluation["rewards/accuracies"] >= 0.9
    assert evaluation["loss"] < reference["loss"]
    assert evaluation["logps/accuracies"] >= reference["logps/accuracies"]
    assert metrics["train"] == json.loads((trained_run / "metrics.json").read_text())["train"]  # kept


def test_evaluate_refuses_a_run_dir_without_a_finished_run(tmp_path: Path, capsys):
    assert main(["evaluate", "--run-dir", str(tmp_path)]) == 2
    assert "holds no finished training run" in capsys.readouterr().err
