"""Staging a base model from storage into the model cache, keyed by its content.

The folder is listed and each of the model's objects stat'ed: Firebase reports an md5 (a crc32c
for composite objects) without reading anything; a local file is read once to compute its md5.
The content hash is the sha256 of those names, sizes and digests. When the cache holds that hash,
nothing is downloaded. Otherwise config.json is read first (``before_download`` checks it: a model
that cannot fit is refused before gigabytes move), then every object is downloaded into a temporary
folder, each copy checked against the digest its hash was made from, and the folder renamed into
the cache whole (:class:`~dpo_lib.models.cache.ModelCache`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpo_lib.io import copy_stream, digest_file
from dpo_lib.models.cache import ModelCache
from dpo_lib.models.folder import CONFIG_FILE, file_uri, folder_problem, listing_prefix, model_files
from dpo_lib.spec import SpecError, StagedModel
from dpo_lib.storage import StorageInterface, TransferCorrupted, get_storage

log = logging.getLogger(__name__)

SOURCE_FILE = ".dpo-source.json"  # in each cache entry: where and when it was staged from


@dataclass(frozen=True)
class ObjectDigest:
    """One object of the model: name, size and a content digest (md5, or crc32c where storage has no md5)."""

    name: str
    uri: str
    size: int
    kind: str
    digest: str


def stage_model(
    uri: str,
    *,
    cache: ModelCache,
    local_root: str | Path,
    before_download: Callable[[dict[str, Any]], None] | None = None,
) -> StagedModel:
    """The model folder at ``uri`` in ``cache``: found there by its content hash, or downloaded into it.

    Raises :class:`SpecError` for a folder that is not a model, ``before_download``'s errors, and
    the storage's own errors (:class:`~dpo_lib.storage.StorageError`) for the caller to sort.
    """
    started = time.monotonic()
    with get_storage(uri, local_root=local_root) as storage:
        listed = storage.list(uri)
        prefix = listing_prefix(uri, local_root)
        files = model_files(listed, prefix)
        all_names = [u[len(prefix) :] for u in listed if u.startswith(prefix)]
        if problem := folder_problem([f.name for f in files], all_names):
            raise SpecError([("model_uri", f"{uri} {problem}")], "invalid model")
        digests = [object_digest(storage, f.name, f.uri) for f in files]
        key = content_hash(digests)
        size = sum(d.size for d in digests)
        if (entry := cache.get(key)) is not None:
            if before_download is not None:
                before_download(json.loads((entry / CONFIG_FILE).read_text()))
            log.info("model %s: content %s is in the model cache (%s): nothing downloaded", uri, key[:12], entry)
            return _record(uri, entry, key, digests, from_cache=True)
        if before_download is not None:
            before_download(read_json(storage, file_uri(uri, CONFIG_FILE)))
        entry, made = cache.add(key, lambda folder: download_all(storage, digests, folder, uri))
    if made:
        log.info("model %s: downloaded %d files (%s bytes) into the model cache %s in %.1f s", uri, len(digests),
                 f"{size:,}", entry, time.monotonic() - started)  # fmt: skip
    else:
        log.info("model %s: another run staged the same content meanwhile; using %s", uri, entry)
    return _record(uri, entry, key, digests, from_cache=not made)


def object_digest(storage: StorageInterface, name: str, uri: str) -> ObjectDigest:
    """Size and digest of one object: from its metadata when storage keeps one, else by reading it."""
    info = storage.stat(uri)
    if info.md5 is not None:
        return ObjectDigest(name, uri, info.size, "md5", info.md5)
    if info.crc32c is not None:
        return ObjectDigest(name, uri, info.size, "crc32c", info.crc32c)
    with storage.open_read(uri) as src:
        digest = copy_stream(src, _Discard())
    return ObjectDigest(name, uri, digest.size, "md5", digest.md5)


def content_hash(digests: list[ObjectDigest]) -> str:
    """sha256 over the sorted names, sizes and digests: equal for equal content, wherever it is stored."""
    lines = sorted(f"{d.name}\t{d.size}\t{d.kind}:{d.digest}\n" for d in digests)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def download_all(storage: StorageInterface, digests: list[ObjectDigest], folder: Path, uri: str) -> None:
    """Every object into ``folder``, each copy checked against the digest the content hash was made from."""
    for d in digests:
        path = folder / d.name
        storage.download(d.uri, path)
        got = digest_file(path).md5 if d.kind == "md5" else _crc32c(path)
        if got != d.digest:
            raise TransferCorrupted(d.uri, f"changed while it was staged ({d.kind} {d.digest} listed, {got} copied)")
    source = {"uri": uri, "staged_at": datetime.now(UTC).isoformat(),
              "files": {d.name: {"size": d.size, d.kind: d.digest} for d in digests}}  # fmt: skip
    (folder / SOURCE_FILE).write_text(json.dumps(source, indent=1, sort_keys=True) + "\n")


def read_json(storage: StorageInterface, uri: str) -> dict[str, Any]:
    """A small JSON object from storage (a model's config.json); SpecError when it is not one."""
    with storage.open_read(uri) as src:
        data = src.read(1 << 20)
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise SpecError([("model_uri", f"{uri} is not valid JSON ({exc})")], "invalid model") from None
    if not isinstance(value, dict):
        raise SpecError([("model_uri", f"{uri} is not a JSON object")], "invalid model")
    return value


def _record(uri: str, entry: Path, key: str, digests: list[ObjectDigest], *, from_cache: bool) -> StagedModel:
    return StagedModel(uri=uri, path=str(entry), content_hash=key, size=sum(d.size for d in digests),
                       files=len(digests), from_cache=from_cache)  # fmt: skip


def _crc32c(path: Path) -> str:
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            checksum.update(chunk)
    return checksum.digest().hex()


class _Discard:
    def write(self, data: bytes) -> int:
        return len(data)
