"""Checkpoints and resumption (dpo_lib/training/checkpoint.py and BasicTrainer.setup)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_lib.training import checkpoint
from dpo_lib.training.checkpoint import COMPLETE_MARKER, latest_checkpoint, list_checkpoints
from dpo_lib.training.metrics import read_metrics
from dpo_lib.training.recipe import train
from dpo_lib.training.trainer import BasicTrainer, TrainingError
from tests.support.training import compose_test_config, unreadable_by_others

# warmup crosses the resume point, so the scheduler's state matters as much as the optimizer's
RESUME_SETTINGS = ("warmup_steps=15", "log_every=5", "checkpoint_every=10", "keep_checkpoints=2")


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def logged_steps(caplog: pytest.LogCaptureFixture, max_steps: int) -> list[int]:
    pattern = re.compile(rf"^step (\d+)/{max_steps} ")
    return [int(m.group(1)) for r in caplog.records if (m := pattern.match(r.getMessage()))]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=0, atol=1e-6), name


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_model_dir, toy_dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run A: 20 steps straight, checkpointing every 10. Tests only read it."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "A"
    train(compose_test_config(tiny_model_dir, toy_dataset, run_dir, "max_steps=20", *RESUME_SETTINGS))
    return run_dir


def test_checkpoint_then_resume_equals_an_uninterrupted_run(make_config, uninterrupted_run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_b = tmp_path / "B"
    train(make_config("max_steps=10", *RESUME_SETTINGS, run_dir=run_b))
    assert [step for step, _ in list_checkpoints(run_b)] == [10]
    first_half = final_weights(run_b)

    caplog.clear()
    train(make_config("max_steps=20", *RESUME_SETTINGS, run_dir=run_b))  # same command, longer

    resumed = [r.getMessage() for r in caplog.records if "resuming from checkpoint" in r.getMessage()]
    assert len(resumed) == 1 and "step-10 at step 10" in resumed[0]
    assert logged_steps(caplog, 20) == [15, 20]  # only the second half was trained
    assert read_metrics(run_b)["train"]["step"] == 20
    assert_same_weights(final_weights(run_b), final_weights(uninterrupted_run))
    assert any(not torch.equal(first_half[k], v) for k, v in final_weights(run_b).items())


def test_resume_skips_a_checkpoint_cut_off_before_its_complete_marker(make_config, uninterrupted_run, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run_b = tmp_path / "B"
    train(make_config("max_steps=10", *RESUME_SETTINGS[:2], "checkpoint_every=5", run_dir=run_b))
    steps = dict(list_checkpoints(run_b))
    assert sorted(steps) == [5, 10]
    # the write of step-10 was cut off: its files may be partial and it has no marker;
    # a later attempt at step 15 left its temporary directory behind
    (steps[10] / COMPLETE_MARKER).unlink()
    (steps[10] / "model.safetensors").write_bytes(b"partial")
    leftover = run_b / "checkpoints" / ".step-15.abc123.tmp"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(run_b) == steps[5]

    caplog.clear()
    train(make_config("max_steps=20", *RESUME_SETTINGS[:2], "checkpoint_every=5", run_dir=run_b))

    resumed = [r.getMessage() for r in caplog.records if "resuming from checkpoint" in r.getMessage()]
    assert len(resumed) == 1 and "step-5 at step 5" in resumed[0]
    assert_same_weights(final_weights(run_b), final_weights(uninterrupted_run))


def test_uninterrupted_run_keeps_only_the_newest_checkpoints(uninterrupted_run):
    assert [step for step, _ in list_checkpoints(uninterrupted_run)] == [10, 20]


def test_resume_with_a_changed_non_resumable_key_is_refused_naming_it(make_config, tmp_path):
    run_dir = tmp_path / "run"
    train(make_config("max_steps=1", "checkpoint_every=1", run_dir=run_dir))
    saved = (run_dir / "config.json").read_text()

    with pytest.raises(TrainingError, match=r"changed: lr\)") as info:
        BasicTrainer(make_config("max_steps=2", "lr=1e-3", run_dir=run_dir)).setup()
    assert str(run_dir) in str(info.value)
    with pytest.raises(TrainingError, match=r"changed: loss, seed\)"):
        BasicTrainer(make_config("loss=ipo", "seed=3", run_dir=run_dir)).setup()
    assert (run_dir / "config.json").read_text() == saved  # a refused run does not overwrite it


def test_resume_accepts_changes_to_bookkeeping_keys(make_config, tmp_path):
    run_dir = tmp_path / "run"
    train(make_config("max_steps=1", "checkpoint_every=1", run_dir=run_dir))
    trainer = BasicTrainer(
        make_config("max_steps=3", "log_every=1", "eval_every=1", "keep_checkpoints=5", run_dir=run_dir)
    )
    trainer.setup()
    assert trainer.step == 1
    assert json.loads((run_dir / "config.json").read_text())["max_steps"] == 3


# ---- the checkpoint module on its own ------------------------------------------------------------


@pytest.fixture
def small_training_state():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (step + 1) / 10)
    return model, optimizer, scheduler


def take_step(model, optimizer, scheduler) -> None:
    model(torch.randn(2, 4)).pow(2).sum().backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_save_then_load_restores_model_optimizer_scheduler_and_rng(small_training_state, tmp_path):
    model, optimizer, scheduler = small_training_state
    take_step(model, optimizer, scheduler)
    path = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {"data": {"micro_batch": 1}}, keep=2)
    expected_weights = {k: v.clone() for k, v in model.state_dict().items()}
    expected_draw = torch.rand(3)  # the RNG right after the save

    take_step(model, optimizer, scheduler)
    take_step(model, optimizer, scheduler)
    state = checkpoint.load_checkpoint(path, model, optimizer, scheduler)

    assert state == {"data": {"micro_batch": 1}, "step": 1}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected_weights.items())
    assert scheduler.last_epoch == 1
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 2 / 10)
    assert int(optimizer.state[model.weight]["step"]) == 1
    assert torch.equal(torch.rand(3), expected_draw)


def test_checkpoint_without_complete_marker_is_never_loaded(small_training_state, tmp_path):
    model, optimizer, scheduler = small_training_state
    first = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, keep=5)
    second = checkpoint.save_checkpoint(tmp_path, 2, model, optimizer, scheduler, {}, keep=5)
    assert latest_checkpoint(tmp_path) == second
    (second / COMPLETE_MARKER).unlink()
    assert latest_checkpoint(tmp_path) == first
    assert list_checkpoints(tmp_path) == [(1, first)]


def test_leftover_temporary_checkpoint_directory_is_ignored(small_training_state, tmp_path):
    model, optimizer, scheduler = small_training_state
    saved = checkpoint.save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {}, keep=5)
    leftover = tmp_path / "checkpoints" / ".step-7.k2j4.tmp"
    leftover.mkdir()
    (leftover / COMPLETE_MARKER).write_text("")  # even one that got as far as its marker
    (tmp_path / "checkpoints" / "step-9").mkdir()  # and a step dir never completed
    assert latest_checkpoint(tmp_path) == saved


def test_no_checkpoint_directory_means_no_checkpoint(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert list_checkpoints(tmp_path / "missing") == []


def test_keep_checkpoints_prunes_the_oldest(small_training_state, tmp_path):
    model, optimizer, scheduler = small_training_state
    for step in (5, 10, 15, 20):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, scheduler, {}, keep=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [15, 20]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-15", "step-20"]


def test_checkpoints_are_ordered_by_step_number_not_name(small_training_state, tmp_path):
    model, optimizer, scheduler = small_training_state
    for step in (9, 10, 100):
        checkpoint.save_checkpoint(tmp_path, step, model, optimizer, scheduler, {}, keep=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [10, 100]


def test_saving_a_step_again_replaces_it(small_training_state, tmp_path):
    model, optimizer, scheduler = small_training_state
    checkpoint.save_checkpoint(tmp_path, 4, model, optimizer, scheduler, {"attempt": 1}, keep=2)
    path = checkpoint.save_checkpoint(tmp_path, 4, model, optimizer, scheduler, {"attempt": 2}, keep=2)
    assert json.loads((path / "trainer_state.json").read_text())["attempt"] == 2
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-4"]


def test_checkpoint_directory_is_readable_by_other_users(small_training_state, tmp_path):
    # assembled in a mkdtemp directory (0700); a retry running as another user must read it
    model, optimizer, scheduler = small_training_state
    path = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, keep=1)
    assert path.stat().st_mode & 0o055 == 0o055
    # and its files: safetensors writes model.safetensors 0600, whatever the umask
    assert unreadable_by_others(path) == []
