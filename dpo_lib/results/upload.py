"""A folder stored under a storage prefix so that no reader can take a partial copy for a complete one.

``upload_files`` deletes the prefix's completion marker, ``upload.json``, uploads and checks every
file, and writes the marker last. A copy is complete only while its marker is there, and is then
exactly the files it lists; every reader requires it. The format is in docs/results.md.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpo_lib.io import digest_file
from dpo_lib.storage.interface import ObjectNotFound, StorageError, StorageInterface

MARKER = "upload.json"
FORMAT = 1


class IncompleteUpload(StorageError):
    """The prefix holds no complete copy: no marker, a damaged one, or files that differ from it."""


def prefix_of(uri: str) -> str:
    """``uri`` as a folder prefix (one trailing ``/``)."""
    return uri.rstrip("/") + "/"


def upload_files(
    storage: StorageInterface, files: Mapping[str, Path], prefix_uri: str, *, info: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Store ``files`` (relative path -> local file) under ``prefix_uri``, the marker last; returns the marker.

    ``info``: more keys for the marker (which run made the copy)."""
    prefix = prefix_of(prefix_uri)
    local = {}
    for rel, path in sorted(files.items()):
        digest = digest_file(path)
        local[rel] = {"path": rel, "size": digest.size, "md5": digest.md5}
    current = _try_read_marker(storage, prefix)
    if current is not None and {f["path"]: f for f in current["files"]} == local:
        return current  # a retry after the copy was completed: nothing to do
    marker_uri = prefix + MARKER
    try:
        storage.delete(marker_uri)  # first: from here until the marker is written again, the copy is incomplete
    except ObjectNotFound:
        pass
    for rel, entry in local.items():
        stored = storage.upload(files[rel], prefix + rel)
        if stored.size != entry["size"] or (stored.md5 is not None and stored.md5 != entry["md5"]):
            raise IncompleteUpload(prefix + rel, f"stored {stored.size} bytes md5 {stored.md5}, expected "
                                                 f"{entry['size']} bytes md5 {entry['md5']}")  # fmt: skip
    marker = {
        **(info or {}),
        "format": FORMAT,
        "files": list(local.values()),
        "bytes": sum(entry["size"] for entry in local.values()),
        "completed_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    with tempfile.TemporaryDirectory(prefix="dpo-upload-") as tmp:
        path = Path(tmp) / MARKER
        path.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        storage.upload(path, marker_uri)
    return marker


def read_marker(storage: StorageInterface, prefix_uri: str) -> dict[str, Any]:
    """The prefix's marker; :class:`IncompleteUpload` when there is none or it is damaged."""
    prefix = prefix_of(prefix_uri)
    with tempfile.TemporaryDirectory(prefix="dpo-marker-") as tmp:
        try:
            storage.download(prefix + MARKER, Path(tmp) / MARKER)
        except ObjectNotFound:
            raise IncompleteUpload(
                prefix, f"no {MARKER}: the copy was never completed (or is being replaced)"
            ) from None
        try:
            marker = json.loads((Path(tmp) / MARKER).read_text())
        except ValueError as exc:
            raise IncompleteUpload(prefix + MARKER, f"not JSON: {exc}") from None
    if not _valid(marker):
        raise IncompleteUpload(prefix + MARKER, "not an upload marker (format, files with path, size and md5)")
    return marker


def download_complete(
    storage: StorageInterface, prefix_uri: str, dest: str | Path, *, under: str = ""
) -> dict[str, Any]:
    """Download the files of the complete copy at ``prefix_uri`` (those whose path starts with ``under``) into
    ``dest``, each checked against the marker; :class:`IncompleteUpload` when the copy is not complete."""
    prefix, dest = prefix_of(prefix_uri), Path(dest)
    marker = read_marker(storage, prefix)
    for entry in marker["files"]:
        if not entry["path"].startswith(under):
            continue
        target = dest / entry["path"][len(under) :]
        try:
            storage.download(prefix + entry["path"], target)
        except ObjectNotFound:
            raise IncompleteUpload(prefix + entry["path"], f"listed in {MARKER} but missing") from None
        got = digest_file(target)
        if (got.size, got.md5) != (entry["size"], entry["md5"]):
            target.unlink(missing_ok=True)
            raise IncompleteUpload(prefix + entry["path"], f"{got.size} bytes md5 {got.md5}, but {MARKER} lists "
                                                           f"{entry['size']} bytes md5 {entry['md5']}")  # fmt: skip
    return marker


def _try_read_marker(storage: StorageInterface, prefix: str) -> dict[str, Any] | None:
    try:
        return read_marker(storage, prefix)
    except IncompleteUpload:
        return None


def _valid(marker: Any) -> bool:
    return (
        isinstance(marker, dict)
        and marker.get("format") == FORMAT
        and isinstance(marker.get("files"), list)
        and all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
            and isinstance(f.get("md5"), str) and ".." not in f["path"].split("/") and not f["path"].startswith("/")
            for f in marker["files"]
        )
    )  # fmt: skip
