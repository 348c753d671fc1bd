"""Translating google-cloud-storage / google-auth / requests exceptions into storage errors.

The client libraries raise from several families (api_core HTTP errors, RetryError
wrapping the last attempt, requests connection errors, google-auth errors,
resumable-media checksum errors). Users should see one line naming the URI and
the reason, and callers should be able to tell "retry later" (StorageUnavailable)
from "fix your config" (AccessDenied, InvalidURI) from "it is not there"
(ObjectNotFound). The original exception stays attached as ``__cause__`` for
debugging; nothing here quotes credential content (see firebase_credentials).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dpo_lib.storage._oserrors import os_errors
from dpo_lib.storage.firebase_credentials import HOW_TO_CONFIGURE
from dpo_lib.storage.interface import (
    AccessDenied,
    ObjectNotFound,
    StorageError,
    StorageUnavailable,
    TransferCorrupted,
)

_MAX_REASON = 300


def short(exc: BaseException) -> str:
    """One-line, bounded description of a library exception."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if "Connection refused" in text:
        return "connection refused"
    if len(text) > _MAX_REASON:
        text = text[: _MAX_REASON - 3] + "..."
    return text


def translate(uri: str, exc: BaseException, endpoint: str) -> StorageError | None:
    """The storage error for ``exc``, or None when it is not a library error we know."""
    import requests
    import urllib3
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth
    from google.resumable_media import common as media

    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, api.RetryError):
        cause = exc.cause
        inner = translate(uri, cause, endpoint) if cause is not None else None
        if isinstance(inner, StorageUnavailable) or inner is None:
            detail = short(cause) if cause is not None else short(exc)
            return StorageUnavailable(uri, f"gave up retrying {endpoint}: {detail}")
        return inner
    if isinstance(exc, api.NotFound):
        return ObjectNotFound(uri, "no such object (or bucket)")
    if isinstance(exc, (api.Forbidden, api.Unauthorized)):
        return AccessDenied(uri, f"permission denied by {endpoint} (HTTP {exc.code}): {short(exc.message)}")
    if isinstance(exc, api.PreconditionFailed):
        return TransferCorrupted(uri, "object was replaced while being read; try again")
    if isinstance(exc, (api.ServerError, api.TooManyRequests)):
        return StorageUnavailable(uri, f"{endpoint} answered HTTP {exc.code}: {short(exc.message)}")
    if isinstance(
        exc, (requests.ConnectionError, requests.Timeout, auth.TransportError, ConnectionError, TimeoutError)
    ):
        return StorageUnavailable(uri, f"cannot reach {endpoint}: {short(exc)}")
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError)):
        # The connection broke off mid-transfer: as transient as a refused one, so retried, not taken for bad data.
        return StorageUnavailable(uri, f"the connection to {endpoint} broke off mid-transfer: {short(exc)}")
    if isinstance(exc, auth.DefaultCredentialsError):
        return AccessDenied(uri, f"no Google credentials found; {HOW_TO_CONFIGURE}")
    if isinstance(exc, auth.RefreshError):
        return AccessDenied(uri, "cannot obtain an access token with the configured credentials")
    if isinstance(exc, media.DataCorruption):
        return TransferCorrupted(uri, f"checksum mismatch during transfer: {short(exc)}")
    if isinstance(exc, api.GoogleAPICallError):
        return StorageError(uri, f"{endpoint} answered HTTP {exc.code}: {short(exc.message)}")
    if isinstance(exc, (api.GoogleAPIError, auth.GoogleAuthError, requests.RequestException)):
        return StorageError(uri, short(exc))
    return None


@contextlib.contextmanager
def gcs_errors(uri: str, endpoint: str) -> Iterator[None]:
    """Re-raise library exceptions from the block as storage errors naming ``uri``."""
    try:
        yield
    except Exception as exc:
        err = translate(uri, exc, endpoint)
        if err is None:
            with os_errors(uri):  # local-file OSErrors (download destination, upload source)
                raise
            raise
        if err is exc:
            raise
        raise err from exc
