"""Storage backends for datasets, checkpoints and reports, chosen by URI.

``get_storage(uri)`` returns a :class:`StorageInterface`: :class:`LocalStorage` for plain
paths and ``file://`` URIs, :class:`FirebaseStorage` for ``gs://bucket/path``.

Importing this package is cheap: backends load on first attribute access, so a DAG
file or the local-only CLI never imports firebase_admin or google.cloud.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dpo_lib.storage.factory import get_storage, local_root_from_env
from dpo_lib.storage.interface import (
    AccessDenied,
    DownloadResult,
    InvalidURI,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageInterface,
    StorageUnavailable,
    TransferCorrupted,
)
from dpo_lib.storage.uri import ParsedURI, parse_uri

if TYPE_CHECKING:
    from dpo_lib.storage.firebase import FirebaseStorage
    from dpo_lib.storage.local import LocalStorage

_LAZY = {
    "LocalStorage": "dpo_lib.storage.local",
    "FirebaseStorage": "dpo_lib.storage.firebase",
}

__all__ = [
    "AccessDenied",
    "DownloadResult",
    "FirebaseStorage",
    "InvalidURI",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "ParsedURI",
    "StorageError",
    "StorageInterface",
    "StorageUnavailable",
    "TransferCorrupted",
    "get_storage",
    "local_root_from_env",
    "parse_uri",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
