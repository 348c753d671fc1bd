"""Storage on the local filesystem, confined to one root directory.

Used for tests, the toy demo and single-machine runs. Every path is resolved (``..`` and symlinks
included) and must stay inside the root, and only regular files are read (:func:`open_regular_file`).
"""

from __future__ import annotations

import errno
import os
import stat as stat_module
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dpo_lib.io import TEMP_SUFFIX, atomic_destination, copy_stream
from dpo_lib.storage._oserrors import os_errors as _os_errors
from dpo_lib.storage.interface import (
    AccessDenied,
    DownloadResult,
    InvalidURI,
    ObjectInfo,
    StorageError,
    StorageInterface,
    TransferCorrupted,
)
from dpo_lib.storage.uri import parse_uri

_FILE_TYPES = (
    (stat_module.S_ISDIR, "a directory"),
    (stat_module.S_ISFIFO, "a FIFO (named pipe)"),
    (stat_module.S_ISSOCK, "a socket"),
    (stat_module.S_ISCHR, "a character device"),
    (stat_module.S_ISBLK, "a block device"),
)


class NotRegularFile(OSError):
    """The path exists, but is not a regular file: its ``strerror`` says what it is."""


def open_regular_file(path: str | os.PathLike[str]) -> BinaryIO:
    """Open ``path`` (symlinks followed) for reading if it is a regular file, without ever blocking.

    The type is checked before opening, and again on the descriptor, opened with
    ``O_NONBLOCK`` so that even a FIFO swapped in between cannot make ``open()`` wait for a
    writer. Anything else raises :class:`NotRegularFile`, naming what the path is.
    """
    _require_regular(os.stat(path).st_mode, path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        _require_regular(os.fstat(fd).st_mode, path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(mode: int, path: str | os.PathLike[str]) -> None:
    if stat_module.S_ISREG(mode):
        return
    kind = next((name for is_kind, name in _FILE_TYPES if is_kind(mode)), "a special file")
    raise NotRegularFile(errno.EINVAL, f"is {kind}, not a regular file", os.fspath(path))


class LocalStorage(StorageInterface):
    """Plain paths (relative ones resolve against ``root``) and ``file:///abs/path`` URIs under ``root``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStorage(root={str(self.root)!r})"

    # -- path handling -------------------------------------------------------

    def resolve(self, uri: str) -> Path:
        """The absolute, symlink-free path ``uri`` names; AccessDenied when it leaves the root."""
        parsed = parse_uri(uri)
        if not parsed.is_local:
            raise InvalidURI(uri, f"LocalStorage handles plain paths and file:// URIs, not {parsed.scheme}://")
        path = Path(parsed.path)
        if not path.is_absolute():
            path = self.root / path
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: symlink loop on Python < 3.13
            raise AccessDenied(uri, f"cannot resolve path: {exc}") from exc
        if not resolved.is_relative_to(self.root):
            raise AccessDenied(uri, f"path resolves to {resolved}, outside the storage root {self.root}")
        return resolved

    def _object_path(self, uri: str) -> Path:
        """Like :meth:`resolve`, but the path must not be a directory (objects are files)."""
        path = self.resolve(uri)
        if path.is_dir():
            raise StorageError(uri, "is a directory, not a file")
        return path

    # -- StorageInterface ----------------------------------------------------

    def upload(self, local_path: str | Path, uri: str) -> ObjectInfo:
        dest = self._object_path(uri)
        with _os_errors(str(local_path)), open_regular_file(local_path) as src:
            expected = os.fstat(src.fileno()).st_size
            with _os_errors(uri), atomic_destination(dest) as (fh, _):
                digest = copy_stream(src, fh)
                _check_size(uri, expected, digest.size)
        return ObjectInfo(uri=uri, size=digest.size, md5=digest.md5)

    def download(self, uri: str, local_path: str | Path) -> DownloadResult:
        dest = Path(local_path)
        if dest.is_dir():
            raise StorageError(uri, f"download destination {dest} is a directory")
        expected = self.stat(uri).size
        with self.open_read(uri) as src, _os_errors(uri), atomic_destination(dest) as (fh, _):
            digest = copy_stream(src, fh)
            _check_size(uri, expected, digest.size)
        return DownloadResult(uri=uri, path=dest, size=digest.size, sha256=digest.sha256)

    def exists(self, uri: str) -> bool:
        return self.resolve(uri).is_file()

    def list(self, prefix_uri: str) -> list[str]:
        base = self.resolve(prefix_uri)
        as_file_uri = parse_uri(prefix_uri).scheme == "file"
        found = []
        for path in self._walk_files(base):
            found.append(path.as_uri() if as_file_uri else str(path))
        return sorted(found)

    def delete(self, uri: str) -> None:
        path = self._object_path(uri)
        with _os_errors(uri):
            path.unlink()

    def open_read(self, uri: str) -> BinaryIO:
        path = self._object_path(uri)
        with _os_errors(uri):
            return open_regular_file(path)

    def stat(self, uri: str) -> ObjectInfo:
        path = self._object_path(uri)
        with _os_errors(uri):
            st = path.stat()
        if not stat_module.S_ISREG(st.st_mode):
            raise StorageError(uri, "not a regular file")
        return ObjectInfo(uri=uri, size=st.st_size)

    # -- helpers ---------------------------------------------------------------

    def _walk_files(self, base: Path) -> Iterator[Path]:
        """Regular files below ``base`` that resolve inside the root; in-progress temp files skipped."""
        if not base.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(base):  # does not descend into symlinked dirs
            for name in filenames:
                if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                    continue
                path = Path(dirpath) / name
                target = path.resolve()
                if target.is_relative_to(self.root) and target.is_file():
                    yield path


def _check_size(uri: str, expected: int, actual: int) -> None:
    if expected != actual:
        raise TransferCorrupted(
            uri, f"size mismatch: expected {expected} bytes, copied {actual} (changed during copy?)"
        )
