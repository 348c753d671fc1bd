"""Parsing storage URIs into (scheme, bucket, path) without touching any backend.

Only ``scheme://`` counts as a scheme, so a plain relative path that happens to
contain a colon stays a path. ``file`` URIs are percent-decoded (that is how
:meth:`pathlib.Path.as_uri` writes them); ``gs`` object names are taken literally,
as gsutil and the GCS console do, because ``%``, ``?`` and ``#`` are legal in them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from dpo_lib.storage.interface import InvalidURI

LOCAL_SCHEMES = ("", "file")
SUPPORTED_SCHEMES = ("file", "gs")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# GCS bucket names: 3-222 chars of lowercase letters, digits, '-', '_' and '.',
# starting and ending with a letter or digit.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class ParsedURI:
    """A URI split into parts.

    ``scheme`` is ``""`` for a plain path. ``bucket`` is set for ``gs`` only. ``path``
    is the filesystem path for local URIs and the object name (no leading slash,
    possibly ``""``) for ``gs``.
    """

    scheme: str
    bucket: str
    path: str

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES


def scheme_of(uri: str) -> str:
    """The lowercased scheme of ``uri`` (``""`` for a plain path), without checking the rest."""
    match = _SCHEME_RE.match(uri)
    return match.group(1).lower() if match else ""


def parse_uri(uri: str) -> ParsedURI:
    """Split ``uri`` into scheme, bucket and path; raise :class:`InvalidURI` when it is malformed."""
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidURI(repr(uri), "empty URI")
    if "\x00" in uri:
        raise InvalidURI(uri, "URI contains a NUL byte")
    match = _SCHEME_RE.match(uri)
    if match is None:
        return ParsedURI(scheme="", bucket="", path=uri)
    scheme = match.group(1).lower()
    rest = uri[match.end() :]
    if scheme == "file":
        return _parse_file(uri, rest)
    if scheme == "gs":
        return _parse_gs(uri, rest)
    raise InvalidURI(
        uri,
        f"unsupported scheme {scheme!r}; supported: plain paths, " + ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES),
    )


def _parse_file(uri: str, rest: str) -> ParsedURI:
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost"):
        raise InvalidURI(uri, f"file URIs must be absolute (file:///abs/path); {host!r} would be a remote host")
    if not slash:
        raise InvalidURI(uri, "file URI has no path (expected file:///abs/path)")
    return ParsedURI(scheme="file", bucket="", path=unquote("/" + path))


def _parse_gs(uri: str, rest: str) -> ParsedURI:
    bucket, _, name = rest.partition("/")
    if not bucket:
        raise InvalidURI(uri, "gs URI has no bucket (expected gs://bucket/path)")
    if not _BUCKET_RE.match(bucket):
        raise InvalidURI(uri, f"invalid bucket name {bucket!r}")
    return ParsedURI(scheme="gs", bucket=bucket, path=name)
