"""Choosing a backend from a URI, so callers pass URIs around and never backend classes.

Local roots: an explicit ``local_root`` argument wins, then the deployment's
``DPO_LOCAL_STORAGE_ROOT`` (the shared volume Airflow workers and trainer containers
mount; :class:`~dpo_lib.settings.StorageSettings`).
"""

from __future__ import annotations

from pathlib import Path

from dpo_lib.storage.interface import InvalidURI, StorageInterface
from dpo_lib.storage.uri import SUPPORTED_SCHEMES, parse_uri


def local_root_from_env(local_root: str | Path | None = None) -> Path:
    """The root LocalStorage should use: the argument, else the deployment's local storage root."""
    if local_root is not None:
        return Path(local_root)
    from dpo_lib.settings import StorageSettings

    return StorageSettings.from_env().local_root


def get_storage(uri: str, *, local_root: str | Path | None = None) -> StorageInterface:
    """The backend that serves ``uri``: LocalStorage for plain paths and file://, FirebaseStorage for gs://.

    Raises InvalidURI for any other scheme, naming it and the supported ones. Building
    the backend touches neither the network nor credentials.
    """
    parsed = parse_uri(uri)  # raises InvalidURI for unknown schemes
    if parsed.is_local:
        from dpo_lib.storage.local import LocalStorage

        return LocalStorage(local_root_from_env(local_root))
    if parsed.scheme == "gs":
        from dpo_lib.storage.firebase import FirebaseStorage

        return FirebaseStorage(parsed.bucket)
    raise InvalidURI(uri, f"no backend for scheme {parsed.scheme!r}; supported: {', '.join(SUPPORTED_SCHEMES)}")
