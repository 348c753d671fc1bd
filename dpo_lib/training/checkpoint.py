"""Checkpoints under ``run_dir/checkpoints/step-N/``, written atomically.

A checkpoint is written in a hidden temporary folder, renamed into place and marked ``COMPLETE``;
one without the marker is never loaded. Pruning renames a checkpoint out of the ``step-N`` names
before deleting it, and :func:`remove_stale_temporaries` clears what killed writes left behind.
A full disk raises ``OSError(ENOSPC)`` naming the checkpoint and keeps the previous ones.
An adapter run's checkpoint holds only its trainable weights and their optimizer state.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from dpo_lib.io import is_disk_full, make_readable_by_all

COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(run_dir)
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / COMPLETE_MARKER).exists():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1][1] if checkpoints else None


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainer_state: dict[str, Any],
    keep: int,
    trainable_only: bool = False,
) -> Path:
    """Write ``step-N`` (model, optimizer, scheduler, trainer state, RNG) and prune to ``keep`` newest.

    ``trainable_only``: of the model, only the parameters that require grad (an adapter run's adapters).
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".step-{step}.", suffix=".tmp", dir=root))
    try:
        if trainable_only:
            save_file(trainable_state_dict(model), str(tmp / "model.safetensors"))
        else:
            save_model(model, str(tmp / "model.safetensors"))
        with open(tmp / "optimizer.pt", "wb") as f:  # a file object: a full disk surfaces as OSError(ENOSPC)
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, f
            )
        (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        for path in tmp.iterdir():
            _fsync(path)
        (tmp / COMPLETE_MARKER).write_text("")
        make_readable_by_all(tmp)  # mkdtemp and safetensors make them private; a retry may run as another user
        if final.exists():  # a retry re-reaching a step it already saved
            discard(final)
        os.replace(tmp, final)
        _fsync(root)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_disk_full(exc, f"checkpoint step-{step}", root)
        raise
    prune(run_dir, keep)
    return final


def prune(run_dir: str | Path, keep: int) -> None:
    """Remove all but the ``keep`` newest complete checkpoints."""
    for _, old in list_checkpoints(run_dir)[:-keep]:
        discard(old)


def discard(path: Path) -> None:
    """Remove a checkpoint directory: first out of the ``step-N`` namespace (atomic), then its files."""
    trash = path.with_name(f".discard-{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Remove what killed writes left behind: hidden ``*.tmp`` entries of the checkpoint folder
    (checkpoints being saved or discarded), and the run folder's ``.final.*`` and ``.discard-*.tmp``
    (the final model being saved or replaced).

    Call it only while nothing is being saved in ``run_dir`` (when a run starts). Returns what it removed.
    """
    run_dir, root = Path(run_dir), checkpoint_root(run_dir)
    stale = [p for p in root.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")] if root.is_dir() else []
    stale += [p for p in run_dir.glob(".final.*") if p.is_dir()] + list(run_dir.glob(".discard-*.tmp"))
    for path in sorted(stale):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return sorted(stale)


def raise_if_disk_full(exc: BaseException, what: str, where: Path) -> None:
    """Re-raise ``exc`` as ``OSError(ENOSPC)`` naming ``what`` and ``where`` when it says the disk is full."""
    if isinstance(exc, Exception) and is_disk_full(exc):
        raise OSError(errno.ENOSPC, f"No space left on device while writing {what}", str(where)) from exc


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    trainable_only: bool = False,
) -> dict[str, Any]:
    """Restore everything ``save_checkpoint`` wrote; returns the trainer state (with ``step``)."""
    path = Path(path)
    if trainable_only:
        load_trainable(model, path / "model.safetensors")
    else:
        load_model(model, str(path / "model.safetensors"))
    extra = torch.load(path / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    set_rng_state(extra["rng"])
    return json.loads((path / "trainer_state.json").read_text())


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that require grad, by name: what an adapter run trains."""
    return {name: param.detach() for name, param in model.named_parameters() if param.requires_grad}


def load_trainable(model: torch.nn.Module, filename: Path) -> None:
    """Copy the weights :func:`trainable_state_dict` saved to ``filename`` into ``model``'s trainable parameters."""
    saved = load_file(str(filename))
    params = {name: param for name, param in model.named_parameters() if param.requires_grad}
    if saved.keys() != params.keys():
        missing, extra = sorted(params.keys() - saved.keys()), sorted(saved.keys() - params.keys())
        raise ValueError(f"{filename} does not hold this model's trainable weights (missing {missing[:3]}, "
                         f"not in the model {extra[:3]})")  # fmt: skip
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
