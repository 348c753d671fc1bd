"""Firebase Cloud Storage (a GCS bucket) through firebase-admin, addressed as ``gs://bucket/path``.

The app and client are created on first use (a DAG parse needs no credentials); every call has a
timeout and a bounded retry deadline; downloads and uploads are checked against GCS's size and
md5/crc32c (docs/datasets.md#firebase-storage). Credentials: :mod:`dpo_lib.storage.firebase_credentials`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import threading
import uuid
import weakref
from pathlib import Path
from typing import Any, BinaryIO

from dpo_lib.io import atomic_destination, digest_file
from dpo_lib.settings import StorageSettings
from dpo_lib.storage._oserrors import os_errors
from dpo_lib.storage.firebase_credentials import EMULATOR_ENV, resolve_credential
from dpo_lib.storage.firebase_errors import gcs_errors
from dpo_lib.storage.firebase_reader import guarded_reader
from dpo_lib.storage.interface import (
    DownloadResult,
    InvalidURI,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    StorageInterface,
    TransferCorrupted,
)
from dpo_lib.storage.uri import parse_uri

READ_CHUNK_SIZE = 8 << 20  # open_read fetches 8 MiB ranges: few requests, bounded memory
_PUBLIC_ENDPOINT = "https://storage.googleapis.com"


class FirebaseStorage(StorageInterface):
    """One bucket of Firebase Cloud Storage; URIs of other buckets are refused (InvalidURI)."""

    def __init__(
        self,
        bucket: str,
        *,
        timeout: float | None = None,
        retry_deadline: float | None = None,
    ) -> None:
        """``timeout``: seconds per HTTP request; ``retry_deadline``: total seconds spent retrying
        transient failures (0 disables retries). Both default to the env vars, then 60 s and 120 s.
        """
        parsed = parse_uri(f"gs://{bucket}/")
        self.bucket_name = parsed.bucket
        settings = StorageSettings.from_env() if timeout is None or retry_deadline is None else None
        self.timeout = timeout if timeout is not None else settings.timeout_s
        self.retry_deadline = retry_deadline if retry_deadline is not None else settings.retry_deadline_s
        self._lock = threading.Lock()
        self._app: Any = None
        self._bucket: Any = None
        self._retry: Any = None
        self._finalizer: weakref.finalize | None = None
        self.credential_source: str | None = None

    def __repr__(self) -> str:
        return f"FirebaseStorage(bucket={self.bucket_name!r})"

    # -- setup -------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """Where requests go, for error messages."""
        if self._bucket is not None:
            return str(self._bucket.client.api_endpoint)
        return os.environ.get(EMULATOR_ENV) or _PUBLIC_ENDPOINT

    def _get_bucket(self, uri: str) -> Any:
        """The google.cloud.storage Bucket, creating the firebase app on first use."""
        with self._lock:
            if self._bucket is None:
                self._bucket = self._connect(uri)
            return self._bucket

    def _connect(self, uri: str) -> Any:
        import firebase_admin
        from firebase_admin import storage as firebase_storage
        from google.cloud.storage.retry import DEFAULT_RETRY

        resolved = resolve_credential(uri)
        options = {"storageBucket": self.bucket_name}
        if resolved.project_id:
            options["projectId"] = resolved.project_id
        app = firebase_admin.initialize_app(
            resolved.credential, options, name=f"dpo-storage-{self.bucket_name}-{uuid.uuid4().hex[:12]}"
        )
        try:
            with gcs_errors(uri, self.endpoint):
                # The GCS client reads STORAGE_EMULATOR_HOST here, at construction.
                bucket = firebase_storage.bucket(app=app)
        except BaseException:
            firebase_admin.delete_app(app)
            raise
        self._app = app
        # Forgotten instances (get_storage(...) used once) still release their app when collected.
        self._finalizer = weakref.finalize(self, _release, bucket, app)
        self.credential_source = resolved.source
        self._retry = DEFAULT_RETRY.with_timeout(self.retry_deadline) if self.retry_deadline > 0 else None
        return bucket

    def close(self) -> None:
        with self._lock:
            finalizer, self._finalizer = self._finalizer, None
            self._bucket = self._app = None
        if finalizer is not None:
            finalizer()  # runs _release once; later calls and garbage collection do nothing

    # -- URI handling --------------------------------------------------------------

    def _object_name(self, uri: str, *, allow_prefix: bool = False) -> str:
        parsed = parse_uri(uri)
        if parsed.scheme != "gs":
            raise InvalidURI(uri, "FirebaseStorage handles gs://bucket/path URIs only")
        if parsed.bucket != self.bucket_name:
            raise InvalidURI(uri, f"this storage serves bucket {self.bucket_name!r}, not {parsed.bucket!r}")
        if not allow_prefix and (not parsed.path or parsed.path.endswith("/")):
            raise InvalidURI(uri, "names a folder prefix, not an object")
        return parsed.path

    def _uri(self, name: str) -> str:
        return f"gs://{self.bucket_name}/{name}"

    def _get_blob(self, uri: str) -> Any:
        """The blob's metadata (size, hashes, generation); ObjectNotFound when absent."""
        name = self._object_name(uri)
        bucket = self._get_bucket(uri)
        with gcs_errors(uri, self.endpoint):
            blob = bucket.get_blob(name, timeout=self.timeout, retry=self._retry)
        if blob is None:
            raise ObjectNotFound(uri, f"no such object in bucket {self.bucket_name!r}")
        return blob

    # -- StorageInterface ---------------------------------------------------------

    def upload(self, local_path: str | Path, uri: str) -> ObjectInfo:
        name = self._object_name(uri)
        with os_errors(str(local_path)):
            local = digest_file(Path(local_path))
        bucket = self._get_bucket(uri)
        blob = bucket.blob(name)
        with gcs_errors(uri, self.endpoint):
            blob.upload_from_filename(str(local_path), timeout=self.timeout, retry=self._retry)
        info = _info(uri, blob)
        problem = None
        if info.size != local.size:
            problem = f"size mismatch: uploaded {local.size} bytes, bucket reports {info.size}"
        elif info.md5 is not None and info.md5 != local.md5:
            problem = f"md5 mismatch: local {local.md5}, bucket reports {info.md5} (file changed during upload?)"
        if problem:
            with gcs_errors(uri, self.endpoint):  # remove exactly the bad generation, not a newer one
                blob.delete(if_generation_match=blob.generation, timeout=self.timeout, retry=self._retry)
            raise TransferCorrupted(uri, problem)
        return info

    def download(self, uri: str, local_path: str | Path) -> DownloadResult:
        dest = Path(local_path)
        if dest.is_dir():
            raise StorageError(uri, f"download destination {dest} is a directory")
        blob = self._get_blob(uri)
        expected = _info(uri, blob)
        with gcs_errors(uri, self.endpoint), atomic_destination(dest) as (fh, tmp):
            blob.download_to_file(fh, if_generation_match=blob.generation, timeout=self.timeout, retry=self._retry)
            fh.flush()
            got = digest_file(tmp)
            _verify_download(uri, expected, got.size, got.md5, tmp)
        return DownloadResult(uri=uri, path=dest, size=got.size, sha256=got.sha256)

    def exists(self, uri: str) -> bool:
        name = self._object_name(uri)
        bucket = self._get_bucket(uri)
        with gcs_errors(uri, self.endpoint):
            return bool(bucket.blob(name).exists(timeout=self.timeout, retry=self._retry))

    def list(self, prefix_uri: str) -> list[str]:
        prefix = self._object_name(prefix_uri, allow_prefix=True)
        if prefix and not prefix.endswith("/"):
            prefix += "/"  # a directory prefix: "data" must not match "data2/x"
        bucket = self._get_bucket(prefix_uri)
        with gcs_errors(prefix_uri, self.endpoint):
            names = [
                blob.name
                for blob in bucket.client.list_blobs(
                    bucket, prefix=prefix or None, timeout=self.timeout, retry=self._retry
                )
                if not blob.name.endswith("/")  # console-created "folder" placeholders
            ]
        return sorted(self._uri(name) for name in names)

    def delete(self, uri: str) -> None:
        name = self._object_name(uri)
        bucket = self._get_bucket(uri)
        with gcs_errors(uri, self.endpoint):
            bucket.delete_blob(name, timeout=self.timeout, retry=self._retry)

    def open_read(self, uri: str) -> BinaryIO:
        blob = self._get_blob(uri)
        with gcs_errors(uri, self.endpoint):
            reader = blob.open(
                "rb",
                chunk_size=READ_CHUNK_SIZE,
                if_generation_match=blob.generation,  # all ranges come from one version
                timeout=self.timeout,
                retry=self._retry,
            )
        return guarded_reader(reader, uri, self.endpoint)

    def stat(self, uri: str) -> ObjectInfo:
        return _info(uri, self._get_blob(uri))


def _release(bucket: Any, app: Any) -> None:
    """Close the HTTP session and drop the app from firebase-admin's global registry."""
    import firebase_admin

    bucket.client.close()
    with contextlib.suppress(ValueError):  # already deleted
        firebase_admin.delete_app(app)


def _info(uri: str, blob: Any) -> ObjectInfo:
    return ObjectInfo(
        uri=uri,
        size=int(blob.size or 0),
        md5=_b64_to_hex(blob.md5_hash),
        crc32c=_b64_to_hex(blob.crc32c),
    )


def _verify_download(uri: str, expected: ObjectInfo, size: int, md5: str, path: Path) -> None:
    """Raise unless the temp file matches the metadata GCS reported for that generation."""
    if size != expected.size:
        raise TransferCorrupted(uri, f"size mismatch: bucket reports {expected.size} bytes, received {size}")
    if expected.md5 is not None:
        if md5 != expected.md5:
            raise TransferCorrupted(uri, f"md5 mismatch: bucket reports {expected.md5}, received {md5}")
    elif expected.crc32c is not None:
        crc = _crc32c_hex(path)
        if crc != expected.crc32c:
            raise TransferCorrupted(uri, f"crc32c mismatch: bucket reports {expected.crc32c}, received {crc}")


def _crc32c_hex(path: Path) -> str:
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            checksum.update(chunk)
    return checksum.digest().hex()


def _b64_to_hex(value: str | None) -> str | None:
    return base64.b64decode(value).hex() if value else None
