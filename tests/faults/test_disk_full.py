"""A disk that fills up while a checkpoint is written: the run stops with one clear line, the previous
checkpoint stays complete and loadable, nothing half-written is left, and once there is space the same
command resumes.

The real thing needs a small filesystem: a tmpfs mounted for the test (root only; skipped elsewhere).
The in-process tests inject the error instead, so they run everywhere.
"""

from __future__ import annotations

import argparse
import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch

from dpo_lib.config import compose_config
from dpo_lib.io import is_disk_full
from dpo_lib.training import checkpoint, recipe
from dpo_lib.training.checkpoint import COMPLETE_MARKER, list_checkpoints
from dpo_lib.training.recipe import train
from tests.faults.processes import Training, leftovers

pytestmark = pytest.mark.faults

OVERRIDES = ("max_steps=4", "checkpoint_every=2", "keep_checkpoints=2")


@pytest.fixture
def small_disk(tmp_path: Path, tiny_model_dir: Path):
    """A tmpfs that holds one checkpoint of the tiny model and a half, but not two; yields (path, resize)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    checkpoint_bytes = 3 * (tiny_model_dir / "model.safetensors").stat().st_size  # weights + AdamW's two moments
    size = int(1.6 * checkpoint_bytes)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")

    def resize(new_size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(mount_point)], check=True)

    try:
        yield mount_point, resize
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def assert_loadable(path: Path, tiny_model_dir: Path, step: int = 2) -> None:
    """The checkpoint restores into a fresh policy, optimizer and scheduler, as a resuming trainer does it."""
    from dpo_lib.spec import BasicTrainerConfig
    from dpo_lib.training.logps import SequenceLogpModel
    from dpo_lib.training.trainer import load_causal_lm, warmup_then_constant

    model = SequenceLogpModel(load_causal_lm(str(tiny_model_dir), BasicTrainerConfig()))
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_constant(3))
    assert (path / COMPLETE_MARKER).exists()
    assert checkpoint.load_checkpoint(path, model, optimizer, scheduler)["step"] == step
    assert scheduler.last_epoch == step


def test_full_disk_during_checkpointing_stops_with_one_line_keeps_the_previous_checkpoint_then_resumes(
    small_disk, train_argv, tiny_model_dir
):
    disk, resize = small_disk
    run_dir = disk / "run"
    argv = train_argv(run_dir, *OVERRIDES)

    training = Training(argv, disk.parent / "full.log")
    returncode = training.wait(timeout=300)
    output = training.output

    assert returncode == recipe.EXIT_DISK_FULL, output[-3000:]
    assert "Traceback" not in output
    (message,) = [line for line in output.splitlines() if line.startswith("error:")]
    assert f"no space left on device under {run_dir}" in message
    assert "checkpoint step-4" in message and f"{run_dir / 'checkpoints' / 'step-2'} is kept" in message
    assert [step for step, _ in list_checkpoints(run_dir)] == [2]
    assert_loadable(run_dir / "checkpoints" / "step-2", tiny_model_dir)
    assert leftovers(run_dir) == []

    resize(64 << 20)  # space is back: Airflow's retry runs the same command
    retry = Training(argv, disk.parent / "retry.log")
    assert retry.wait(timeout=300) == 0, retry.output[-3000:]
    assert f"resuming from checkpoint {run_dir / 'checkpoints' / 'step-2'} at step 2" in retry.output
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["step"] == 4


def fill_disk_on_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the checkpoint of ``step`` hit a full disk half-way through its weights, as safetensors reports it."""
    real_save_model = checkpoint.save_model

    def save_model(model, filename, *args, **kwargs):
        if f"/.step-{step}." in filename:
            Path(filename).write_bytes(b"\0" * 1000)
            raise RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save_model(model, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_model", save_model)


def test_a_checkpoint_failing_on_a_full_disk_raises_enospc_naming_it_and_keeps_the_previous_one(
    monkeypatch, train_argv, tiny_model_dir, tmp_path
):
    run_dir = tmp_path / "run"
    fill_disk_on_step(monkeypatch, 4)

    with pytest.raises(OSError) as info:
        train(compose_config(train_argv(run_dir, *OVERRIDES)[4:]))

    assert info.value.errno == errno.ENOSPC
    assert "checkpoint step-4" in str(info.value) and str(run_dir / "checkpoints") in str(info.value)
    assert [step for step, _ in list_checkpoints(run_dir)] == [2]
    assert_loadable(run_dir / "checkpoints" / "step-2", tiny_model_dir)
    assert leftovers(run_dir) == []


@pytest.fixture
def no_progress_bars():
    """What the command's own logging setup does to Hugging Face's progress bars (they write to stderr)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    if enabled:
        hf_logging.enable_progress_bar()


def test_train_command_reports_a_full_disk_in_one_line_with_its_own_exit_status(
    monkeypatch, capsys, train_argv, tmp_path, no_progress_bars
):
    run_dir = tmp_path / "run"
    fill_disk_on_step(monkeypatch, 4)
    monkeypatch.setattr(recipe, "configure_logging", lambda: None)  # leave pytest's logging alone

    overrides = train_argv(run_dir, *OVERRIDES)[4:]
    returncode = recipe.run(argparse.Namespace(overrides=overrides, spec=None, print_config=False, argv=overrides))

    err = capsys.readouterr().err
    assert returncode == recipe.EXIT_DISK_FULL
    assert err.count("\n") == 1 and err.startswith(f"error: no space left on device under {run_dir} ")
    assert f"{run_dir / 'checkpoints' / 'step-2'} is kept" in err


@pytest.mark.parametrize(
    "make_error",
    [
        lambda: OSError(errno.ENOSPC, "No space left on device"),
        lambda: OSError(errno.EDQUOT, "Disk quota exceeded"),
        lambda: RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
        lambda: _raised_while_handling(
            RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos"),
            OSError(errno.ENOSPC, "No space left on device"),
        ),  # fmt: skip
    ],
    ids=["enospc", "quota", "safetensors", "torch.save"],
)
def test_a_full_disk_is_recognised_however_the_library_wraps_it(make_error):
    assert is_disk_full(make_error())


@pytest.mark.parametrize(
    "error", [OSError(errno.EACCES, "Permission denied"), RuntimeError("unexpected pos 704 vs 662"), ValueError("x")]
)
def test_other_write_errors_are_not_taken_for_a_full_disk(error):
    assert not is_disk_full(error)


def _raised_while_handling(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except OSError:
            raise outer  # noqa: B904 - the implicit context is what torch.save leaves
    except Exception as exc:  # noqa: BLE001
        return exc
