"""The storage contract every backend implements, and the errors it may raise.

Pipeline code (Airflow tasks, the trainer container, the CLI) moves datasets and
checkpoints through :class:`StorageInterface` only, so the same task runs against a
local directory in tests and against a Firebase/GCS bucket in production.

Errors form one small hierarchy rooted at :class:`StorageError`. Backends translate
their client library's exceptions into it, so callers catch one family and users
see a one-line message that names the URI and the reason instead of a library
traceback.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self


class StorageError(Exception):
    """Base of every storage failure; ``str(err)`` is ``"<uri>: <reason>"``."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"{uri}: {reason}")


class ObjectNotFound(StorageError):
    """The object (or file) named by the URI does not exist."""


class AccessDenied(StorageError):
    """Permission refused, credentials missing or invalid, or a path escaping the storage root."""


class StorageUnavailable(StorageError):
    """The backend could not be reached (connection refused, timeout, 5xx): retrying may help."""


class TransferCorrupted(StorageError):
    """What arrived does not match what storage says the object holds (a body cut short, a checksum
    mismatch, the object replaced mid-read): a fault of this transfer, so retrying may help."""


class InvalidURI(StorageError):
    """The URI is malformed, uses an unsupported scheme, or names another bucket."""


@dataclass(frozen=True)
class DownloadResult:
    """What a download produced: verified size and the sha256 of the bytes now at ``path``.

    The sha256 lets callers record dataset/checkpoint provenance without reading
    the file a second time.
    """

    uri: str
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class ObjectInfo:
    """Metadata that a backend knows without reading the object.

    ``md5`` and ``crc32c`` are lowercase hex digests, or None when the backend does
    not record them (local files: computing them would mean reading the file).
    """

    uri: str
    size: int
    md5: str | None = None
    crc32c: str | None = None


class StorageInterface(abc.ABC):
    """A flat namespace of byte objects addressed by URI.

    Semantics shared by all backends:

    * Objects are files/blobs; directories are only prefixes. ``exists`` is true for
      objects, never for a bare directory.
    * ``upload`` and ``download`` are atomic for readers of the destination: it either
      holds the complete, size/checksum-verified content or is left as it was.
    * ``list`` treats its argument as a directory prefix and returns the sorted URIs of
      every object below it, recursively; a missing prefix yields ``[]``.
    """

    @abc.abstractmethod
    def upload(self, local_path: str | Path, uri: str) -> ObjectInfo:
        """Copy the local file ``local_path`` to ``uri``, replacing any existing object."""

    @abc.abstractmethod
    def download(self, uri: str, local_path: str | Path) -> DownloadResult:
        """Copy the object at ``uri`` to ``local_path`` (parents are created)."""

    @abc.abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether an object exists at ``uri``."""

    @abc.abstractmethod
    def list(self, prefix_uri: str) -> list[str]:
        """Sorted URIs of all objects below the directory ``prefix_uri``."""

    @abc.abstractmethod
    def delete(self, uri: str) -> None:
        """Delete the object at ``uri``; :class:`ObjectNotFound` when there is none."""

    @abc.abstractmethod
    def open_read(self, uri: str) -> BinaryIO:
        """A readable binary stream over the object, for validating data without a full download.

        The caller closes it (use it as a context manager).
        """

    @abc.abstractmethod
    def stat(self, uri: str) -> ObjectInfo:
        """Size (and checksums when cheaply known) of the object at ``uri``."""

    def close(self) -> None:
        """Release clients or connections held by the backend. Idempotent; a no-op by default."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
