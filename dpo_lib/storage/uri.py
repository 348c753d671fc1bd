"""Parsing storage URIs into (scheme, bucket, path) without touching any backend.

Only ``scheme://`` counts as a scheme, so a plain relative path that happens to
contain a colon stays a path. ``file`` URIs are percent-decoded (that is how
:meth:`pathlib.Path.as_uri` writes them); ``gs`` object names are taken literally,
as gsutil and the GCS console do, because ``%``, ``?`` and ``#`` are legal in them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from dpo_lib.storage.interface import InvalidURI

LOCAL_SCHEMES = ("", "file")
SUPPORTED_SCHEMES = ("file", "gs")

_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_BUCKET_CHARS_RE = re.compile(r"^[a-z0-9][a-z0-9._\-]*[a-z0-9]$")
# "google" and its near misspellings may appear nowhere in a bucket name (Cloud Storage's rules).
_GOOGLE_LIKE_RE = re.compile(r"g[o0]{2}g[l1][e3]")


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
    if problem := bucket_name_problem(bucket):
        raise InvalidURI(uri, f"invalid bucket name {bucket!r}: {problem}")
    return ParsedURI(scheme="gs", bucket=bucket, path=name)


def bucket_name_problem(bucket: str) -> str | None:
    """Why ``bucket`` breaks Cloud Storage's bucket naming rules, or None.

    3-63 characters (up to 222 when dot-separated, each part at most 63) of lowercase letters,
    digits, '-', '_' and '.', starting and ending with a letter or digit; no empty part
    (``a..b``); not an IP address; not starting with "goog"; no "google" or a misspelling of it.
    """
    if not 3 <= len(bucket) <= 222:
        return "must be 3 to 63 characters long (222 when it holds dots)"
    if not _BUCKET_CHARS_RE.match(bucket):
        return "use lowercase letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    parts = bucket.split(".")
    if len(parts) == 1 and len(bucket) > 63:
        return "must be at most 63 characters long without dots"
    if any(not part for part in parts):
        return "dot-separated parts must not be empty ('..')"
    if any(len(part) > 63 for part in parts):
        return "each dot-separated part must be at most 63 characters long"
    try:
        ipaddress.ip_address(bucket)
        return "must not be an IP address"
    except ValueError:
        pass
    if bucket.startswith("goog"):
        return "must not start with 'goog'"
    if _GOOGLE_LIKE_RE.search(bucket):
        return "must not contain 'google' or a misspelling of it"
    return None


def uri_problem(uri: str, local_root: Path | None = None) -> str | None:
    """What is wrong with ``uri`` on its face, before any storage is asked, or None: another scheme
    than plain paths, file:// and gs://, a malformed URI or bucket name, a ``..`` segment, or a
    local path outside ``local_root`` (judged from the text; storage resolves symlinks when it reads).
    """
    try:
        parsed = parse_uri(uri)
    except InvalidURI as exc:
        return exc.reason
    path = PurePosixPath(parsed.path)
    if ".." in path.parts:
        return "must not contain a '..' segment (a path may not climb out of its root)"
    if parsed.is_local and local_root is not None and path.is_absolute():
        root = PurePosixPath(Path(local_root).absolute())
        if path != root and not path.is_relative_to(root):
            return f"a local path must lie under the storage root {root}"
    return None
