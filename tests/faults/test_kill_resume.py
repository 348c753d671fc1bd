"""A training process killed with SIGKILL at random moments resumes from its newest checkpoint on the next
run of the same command, and ends exactly where an uninterrupted run ends; nothing it started survives it.

This is what Airflow's retry of the ``train`` task does (it reruns the same command line), without Airflow.
Checkpoints are written often, so many kills land in the middle of a checkpoint write.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_lib.config import compose_config
from dpo_lib.training.checkpoint import COMPLETE_MARKER, list_checkpoints
from dpo_lib.training.recipe import train
from tests.faults.processes import (
    Training,
    children_of,
    kill_all,
    leftovers,
    live_processes_mentioning,
    newest_step,
    wait_for,
)

pytestmark = pytest.mark.faults

COMPARED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected", "grad_norm", "lr", "step")  # fmt: skip
FSDP = ("trainer=fsdp", "trainer.device=cpu", "trainer.nproc=2")
STARTUP_TIMEOUT_S = 180  # torchrun and two workers on a loaded two-core machine
ORPHAN_TIMEOUT_S = 20


def run_to_completion(argv: list[str], log: Path) -> str:
    training = Training(argv, log)
    returncode = training.wait(timeout=600)
    assert returncode == 0, training.output[-4000:]
    return training.output


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """Final weights within 1e-6 of the reference run's, and the same final training metrics."""
    got, expected = (load_file(d / "final" / "model.safetensors") for d in (run_dir, reference))
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6, msg=name)
    got_metrics, expected_metrics = (
        json.loads((d / "metrics.json").read_text())["train"] for d in (run_dir, reference)
    )
    for name in COMPARED:
        assert got_metrics[name] == pytest.approx(expected_metrics[name], rel=1e-6, abs=1e-6), name


def saved_a_checkpoint_or_exited(training: Training, run_dir: Path):
    before = newest_step(run_dir)
    return lambda: newest_step(run_dir) > before or not training.running()


def kill_at_random_moments(argv: list[str], run_dir: Path, kills: int, max_delay: float, targets: list[str]) -> str:
    """Start the command ``kills`` times; each time, once it has saved a new checkpoint, SIGKILL it after a random
    delay (``targets[i]``: ``launcher``, the process started, or ``torchrun``, its child) and check that every
    process it started is gone. Returns a description of what happened, for failure messages."""
    rng = random.Random()
    history = []
    for attempt in range(kills):
        training = Training(argv, run_dir.parent / f"attempt-{attempt}.log")
        progressed = wait_for(saved_a_checkpoint_or_exited(training, run_dir), STARTUP_TIMEOUT_S)
        assert progressed and training.running(), f"attempt {attempt} did not progress:\n{training.output[-3000:]}"
        delay = rng.uniform(0, max_delay)
        time.sleep(delay)
        assert training.running(), f"attempt {attempt} finished before it was killed; raise max_steps"
        victim = training.proc.pid
        if targets[attempt % len(targets)] == "torchrun":
            (victim,) = children_of(training.proc.pid)
        training.kill(victim)
        gone = wait_for(lambda: not live_processes_mentioning(str(run_dir)), ORPHAN_TIMEOUT_S, interval=0.2)
        survivors = live_processes_mentioning(str(run_dir))
        kill_all(survivors)
        assert gone, f"attempt {attempt}: processes outlived the killed {targets[attempt % len(targets)]}: {survivors}"
        history.append(f"attempt {attempt}: SIGKILL to the {targets[attempt % len(targets)]} {delay:.2f}s after it "
                       f"saved a checkpoint; newest complete: step-{newest_step(run_dir)}; cut off mid-write: "
                       f"{leftovers(run_dir) or 'nothing'}")  # fmt: skip
    return "\n".join(history)


@pytest.fixture(scope="module")
def basic_setup(train_argv, tmp_path_factory):
    """The uninterrupted run, in this process (a process less to start): the same computation on the same CPU."""
    overrides = ("max_steps=40", "checkpoint_every=1", "keep_checkpoints=2")
    reference = tmp_path_factory.mktemp("basic-reference") / "run"
    train(compose_config(train_argv(reference, *overrides)[4:]))
    return overrides, reference


@pytest.fixture(scope="module")
def fsdp_setup(train_argv, tmp_path_factory):
    overrides = (*FSDP, "max_steps=16", "checkpoint_every=2", "keep_checkpoints=2")
    reference = tmp_path_factory.mktemp("fsdp-reference") / "run"
    run_to_completion(train_argv(reference, *overrides), reference.parent / "train.log")
    return overrides, reference


def test_basic_training_killed_at_random_moments_resumes_and_matches_an_uninterrupted_run(
    train_argv, basic_setup, tmp_path
):
    overrides, reference = basic_setup
    run_dir = tmp_path / "run"
    argv = train_argv(run_dir, *overrides)
    try:
        history = kill_at_random_moments(argv, run_dir, kills=3, max_delay=0.4, targets=["launcher"])
        print(history)  # shown by pytest -rP: where the kills landed
        killed_at = newest_step(run_dir)
        output = run_to_completion(argv, tmp_path / "final.log")
    finally:
        kill_all(live_processes_mentioning(str(run_dir)))
    assert f"resuming from checkpoint {run_dir / 'checkpoints' / f'step-{killed_at}'} at step {killed_at}" in output, (
        history
    )
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == 40
    assert [step for step, _ in list_checkpoints(run_dir)] == [39, 40]
    assert leftovers(run_dir) == [], history  # what the kills cut off was cleaned up by the next attempt
    assert_same_result(run_dir, reference)


def cut_off_newest_checkpoint(run_dir: Path) -> int:
    """Make the newest sharded checkpoint one whose write was cut off before its marker (a shard half written),
    and add a later temporary folder that got as far as its marker; return the step resume must pick instead."""
    (*_, (previous, _), (newest, path)) = list_checkpoints(run_dir)
    (path / COMPLETE_MARKER).unlink()
    shard = next(path.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    later = run_dir / "checkpoints" / f".step-{newest + 2}.tmp"  # perhaps there already: a kill cut that save off
    shutil.copytree(run_dir / "checkpoints" / f"step-{previous}", later, dirs_exist_ok=True)
    return previous


def test_fsdp_training_killed_at_random_moments_leaves_no_process_and_resumes_past_a_cut_off_shard(
    train_argv, fsdp_setup, tmp_path
):
    """One FSDP launch costs tens of seconds here, so the cut-off checkpoint rides on the killed run's retry."""
    overrides, reference = fsdp_setup
    run_dir = tmp_path / "run"
    argv = train_argv(run_dir, *overrides)
    try:
        # the launcher (what Airflow started), then torchrun itself: the workers must die either way
        history = kill_at_random_moments(argv, run_dir, kills=2, max_delay=0.5, targets=["launcher", "torchrun"])
        print(history)  # shown by pytest -rP: where the kills landed
        resume_at = cut_off_newest_checkpoint(run_dir)  # two kills after new checkpoints: at least two exist
        output = run_to_completion(argv, tmp_path / "final.log")
    finally:
        kill_all(live_processes_mentioning(str(run_dir)))
    assert f"resuming from checkpoint {run_dir / 'checkpoints' / f'step-{resume_at}'} at step {resume_at}" in output, (
        history
    )
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == 16
    assert [step for step, _ in list_checkpoints(run_dir)] == [14, 16]
    assert leftovers(run_dir) == [], history
    assert_same_result(run_dir, reference)
