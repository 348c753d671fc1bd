"""Atomic writes and streaming digests: readers see the old file or the complete new one, never a prefix.

Bytes go to a hidden temporary file beside the destination (same filesystem, so the final
``os.replace`` is an atomic rename), are flushed and synced, and only then take the destination's
name; on any failure the temporary file is removed. Also: telling a full disk from other errors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough for throughput, small enough to stay cache-friendly
TEMP_SUFFIX = ".part"


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int | None: ...


@dataclass(frozen=True)
class Digest:
    """Size and hex digests of a byte stream."""

    size: int
    sha256: str
    md5: str


def copy_stream(src: BinaryIO, dst: _Writable) -> Digest:
    """Copy ``src`` to ``dst`` in chunks, hashing on the way so nothing is read twice."""
    sha256, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    while chunk := src.read(CHUNK_SIZE):
        dst.write(chunk)
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return Digest(size=size, sha256=sha256.hexdigest(), md5=md5.hexdigest())


def digest_file(path: str | Path) -> Digest:
    """Digest of a file's current content."""
    with open(path, "rb") as fh:
        return copy_stream(fh, _NullSink())


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden name next to ``dest``; the suffix lets cleanup tools recognise leftovers."""
    # Keep the name under NAME_MAX (255) even for long destination names.
    return dest.with_name(f".{dest.name[:200]}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_destination(dest: str | Path, mode: int | None = None) -> Iterator[tuple[BinaryIO, Path]]:
    """Yield ``(file, temp_path)``; on clean exit the temp file replaces ``dest``.

    The block verifies what it wrote (raising on mismatch) before leaving; any exception,
    including KeyboardInterrupt, removes the temp file and leaves ``dest`` untouched. ``mode``
    None lets the umask decide the file's permissions, like a plain ``open()``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            yield fh, tmp
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


def atomic_write_bytes(path: str | Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` atomically.

    ``mode`` defaults to world-readable: a trainer container running as another user must be
    able to read run specs, manifests and metrics.
    """
    with atomic_destination(path, mode=mode) as (fh, _):
        fh.write(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def read_json_or_empty(path: str | Path) -> dict[str, Any]:
    """The JSON object in ``path``, or ``{}`` when it is missing or unreadable (an optional record)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def make_group_writable_folder(folder: str | Path) -> Path:
    """Create ``folder`` (and its parents) if missing and make it 0775: writable by its group.

    For a run folder that an Airflow task creates before a trainer container writes into it: the
    trainer image's user, like Airflow's, belongs to group 0, the group of a folder root creates.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_uid == os.geteuid():
        folder.chmod(0o775)
    return folder


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


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself; best effort (not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)
