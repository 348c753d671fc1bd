"""Atomic file replacement and streaming digests, shared by the backends.

A reader of a destination path must see either the old file or the complete new
one, never a prefix: a killed Airflow task or a dropped connection mid-download
would otherwise leave a truncated dataset that the next task happily trains on.
So bytes go to a hidden temporary file in the destination directory (same
filesystem, so the final ``os.replace`` is an atomic rename), are verified, and
only then take the destination name. On any failure the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

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


def digest_file(path: Path) -> Digest:
    """Digest of a file's current content."""
    with open(path, "rb") as fh:
        return copy_stream(fh, _NullSink())


def temp_path_for(dest: Path) -> Path:
    """A fresh hidden name next to ``dest``; the suffix lets cleanup tools recognise leftovers."""
    # Keep the name under NAME_MAX (255) even for long destination names.
    return dest.with_name(f".{dest.name[:200]}.{secrets.token_hex(6)}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_destination(dest: Path) -> Iterator[tuple[BinaryIO, Path]]:
    """Yield ``(file, temp_path)``; on clean exit the temp file replaces ``dest``.

    The block verifies what it wrote (raising on mismatch) before leaving; any
    exception, including KeyboardInterrupt, removes the temp file and leaves
    ``dest`` untouched.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dest)
    # os.open with 0o666 lets the umask decide permissions, like a plain open() would;
    # mkstemp would force 0o600 onto the final file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh, tmp
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


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
