"""Atomic file writes: readers see the old file or the new one, never half of either; and telling a full disk."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    ``mode`` defaults to world-readable: mkstemp's private 0600 would keep a trainer container
    running as another user from reading datasets, manifests and metrics.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_readable_by_all(folder: str | Path) -> None:
    """Give ``folder``, and everything under it, the modes :func:`atomic_write_bytes` gives a file:
    0755 for folders, 0644 for files (symlinks are left alone).

    For a folder assembled in a temporary directory before it is renamed into place (a
    checkpoint, the final model): ``mkdtemp`` makes the folder 0700, and libraries choose their
    files' modes themselves (safetensors writes ``model.safetensors`` 0600 whatever the umask), so
    a retry, ``evaluate`` or a trainer container running as another user could not read them.
    """
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        if path.is_symlink():
            continue
        path.chmod(0o755 if path.is_dir() else 0o644)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
# How libraries that do not raise OSError word it: Rust's io::Error (safetensors), the C library's strerror.
_DISK_FULL_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "os error 122")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, says the disk (or quota) is full.

    torch.save and safetensors wrap the operating system's error in their own exceptions,
    so the chain and the message are searched, not only the type.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS:
            return True
        if any(text in str(exc) for text in _DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
