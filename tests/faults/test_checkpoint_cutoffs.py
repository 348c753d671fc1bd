"""Checkpoint writes and removals cut off at the worst moment are never loaded, and their remains are cleaned up
when the next attempt starts (the sharded FSDP layout included; the end-to-end FSDP case is in test_kill_resume)."""

from __future__ import annotations

import shutil

import pytest
import torch

from dpo_lib.training import checkpoint
from dpo_lib.training.checkpoint import COMPLETE_MARKER, latest_checkpoint, list_checkpoints
from tests.faults.processes import leftovers

pytestmark = pytest.mark.faults


@pytest.fixture
def state():
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def save(tmp_path, step, state, keep=2):
    return checkpoint.save_checkpoint(tmp_path, step, *state, {"data": {}}, keep=keep)


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_a_prune_cut_off_mid_way_leaves_no_checkpoint_that_has_its_marker_but_not_its_weights(
    tmp_path, state, monkeypatch
):
    for step in (1, 2):
        save(tmp_path, step, state)
    real_rmtree = shutil.rmtree

    def killed_after_the_weights(path, *args, **kwargs):
        (path / "model.safetensors").unlink()  # the removal had got this far
        raise Killed

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_after_the_weights)
    with pytest.raises(Killed):
        save(tmp_path, 3, state)  # prunes step-1
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real_rmtree)

    for step, path in list_checkpoints(tmp_path):
        assert (path / "model.safetensors").exists(), f"step-{step} is listed without its weights"
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert checkpoint.remove_stale_temporaries(tmp_path)  # the half-removed step-1, under its hidden name
    assert leftovers(tmp_path) == []


def test_the_next_attempt_removes_what_killed_writes_left_behind(tmp_path, state):
    saved = save(tmp_path, 4, state)
    root = tmp_path / "checkpoints"
    for name in (".step-6.k2j4.tmp", ".step-8.tmp", ".discard-step-2.ab12.tmp"):  # basic save, DCP save, prune
        (root / name).mkdir()
        (root / name / COMPLETE_MARKER).write_text("")
    (tmp_path / ".final.x9y8").mkdir()  # the final model, cut off while being saved

    removed = checkpoint.remove_stale_temporaries(tmp_path)

    assert sorted(p.name for p in removed) == [".discard-step-2.ab12.tmp", ".final.x9y8", ".step-6.k2j4.tmp",
                                               ".step-8.tmp"]  # fmt: skip
    assert leftovers(tmp_path) == [] and latest_checkpoint(tmp_path) == saved


def test_sharded_checkpoints_cut_off_before_their_marker_are_skipped(tmp_path):
    root = tmp_path / "checkpoints"
    for step, complete in ((2, True), (4, False)):
        (root / f"step-{step}").mkdir(parents=True)
        (root / f"step-{step}" / "__0_0.distcp").write_bytes(b"shard")
        (root / f"step-{step}" / ".metadata").write_bytes(b"metadata")
        if complete:
            (root / f"step-{step}" / COMPLETE_MARKER).write_text("")
    (root / ".step-6.tmp").mkdir()  # a DCP save in progress (or killed) keeps this fixed name
    (root / ".step-6.tmp" / COMPLETE_MARKER).write_text("")

    assert latest_checkpoint(tmp_path) == root / "step-2"


def test_resaving_a_step_whose_copy_was_cut_off_replaces_it(tmp_path, state):
    partial = tmp_path / "checkpoints" / "step-5"
    partial.mkdir(parents=True)
    (partial / "model.safetensors").write_bytes(b"partial")  # no marker: a cut-off write

    path = save(tmp_path, 5, state)

    assert path == partial and (path / COMPLETE_MARKER).exists()
    assert checkpoint.load_checkpoint(path, *state)["step"] == 5
    assert leftovers(tmp_path) == []
