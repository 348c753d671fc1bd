"""Translating local filesystem errors into the storage error hierarchy.

Both backends touch local files (the source of an upload, the destination of a
download), and a PermissionError there should reach the user as AccessDenied
naming the URI, exactly like a refusal from the remote side.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from dpo_lib.storage.interface import AccessDenied, ObjectNotFound, StorageError


@contextlib.contextmanager
def os_errors(uri: str) -> Iterator[None]:
    """Translate OSError into the storage hierarchy, naming the URI and the OS's reason."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.filename is not None and str(exc.filename) != uri:
            reason = f"{reason} ({exc.filename})"
        if isinstance(exc, FileNotFoundError):
            raise ObjectNotFound(uri, reason) from exc
        if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise AccessDenied(uri, reason) from exc
        raise StorageError(uri, reason) from exc
