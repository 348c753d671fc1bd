"""FirebaseStorage against a real gcp-storage-emulator over HTTP (no mocks of the client)."""

from __future__ import annotations

import gc
import hashlib
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from dpo_lib.storage import (
    FirebaseStorage,
    InvalidURI,
    ObjectNotFound,
    StorageUnavailable,
    TransferCorrupted,
)
from tests.support.storage_emulator import Emulator, free_port


@pytest.fixture
def storage(emulator_env: Emulator):
    with FirebaseStorage(emulator_env.bucket, timeout=5, retry_deadline=5) as fs:
        yield fs


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    # Larger than one read chunk of the buffered reader, with lines to iterate over.
    path.write_bytes(b"".join(b'{"i": %d, "pad": "%s"}\n' % (i, b"x" * 200) for i in range(12_000)))
    return path


def test_upload_exists_stat(storage: FirebaseStorage, gs_prefix: str, payload: Path):
    uri = f"{gs_prefix}/datasets/train.jsonl"
    assert not storage.exists(uri)
    info = storage.upload(payload, uri)
    data = payload.read_bytes()
    assert info.size == len(data)
    assert info.md5 == hashlib.md5(data).hexdigest()
    assert info.crc32c is not None and len(info.crc32c) == 8
    assert storage.exists(uri)
    assert storage.stat(uri) == info
    assert storage.credential_source == "emulator (STORAGE_EMULATOR_HOST)"


def test_list_with_prefix(storage: FirebaseStorage, gs_prefix: str, payload: Path):
    for rel in ("data/b.jsonl", "data/a.jsonl", "data/sub/c.jsonl", "data2/d.jsonl"):
        storage.upload(payload, f"{gs_prefix}/{rel}")
    expected = [f"{gs_prefix}/data/a.jsonl", f"{gs_prefix}/data/b.jsonl", f"{gs_prefix}/data/sub/c.jsonl"]
    assert storage.list(f"{gs_prefix}/data") == expected
    assert storage.list(f"{gs_prefix}/data/") == expected
    assert len(storage.list(gs_prefix)) == 4
    assert storage.list(f"{gs_prefix}/nothing-here") == []


def test_download_verifies_and_hashes(storage: FirebaseStorage, gs_prefix: str, payload: Path, tmp_path: Path):
    uri = f"{gs_prefix}/train.jsonl"
    storage.upload(payload, uri)
    dest = tmp_path / "dl" / "nested" / "train.jsonl"
    result = storage.download(uri, dest)
    assert dest.read_bytes() == payload.read_bytes()
    assert result.size == payload.stat().st_size
    assert result.sha256 == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert [p.name for p in dest.parent.iterdir()] == ["train.jsonl"]


def test_download_rejects_checksum_mismatch(
    storage: FirebaseStorage, gs_prefix: str, payload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """If the bytes received do not match the md5 GCS reports, nothing lands at the destination."""
    from google.cloud.storage import Blob

    uri = f"{gs_prefix}/train.jsonl"
    storage.upload(payload, uri)
    real_download = Blob.download_to_file

    def corrupting_download(self: Blob, file_obj: BinaryIO, **kwargs: Any) -> None:
        kwargs["checksum"] = None  # let the corruption reach our own verification
        real_download(self, file_obj, **kwargs)
        file_obj.seek(0)
        file_obj.write(b"#")

    monkeypatch.setattr(Blob, "download_to_file", corrupting_download)
    dest = tmp_path / "dl" / "train.jsonl"
    with pytest.raises(TransferCorrupted, match="md5 mismatch"):  # a StorageError staging retries
        storage.download(uri, dest)
    assert list(dest.parent.iterdir()) == []  # neither the file nor a temp file


def test_download_interrupted_by_connection_loss(
    storage: FirebaseStorage, gs_prefix: str, payload: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import requests
    from google.cloud.storage import Blob

    uri = f"{gs_prefix}/train.jsonl"
    storage.upload(payload, uri)

    def dropped(self: Blob, file_obj: BinaryIO, **kwargs: Any) -> None:
        file_obj.write(b"partial")
        raise requests.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(Blob, "download_to_file", dropped)
    dest = tmp_path / "dl" / "train.jsonl"
    dest.parent.mkdir()
    dest.write_bytes(b"previous")
    with pytest.raises(StorageUnavailable, match=r"train\.jsonl: cannot reach"):
        storage.download(uri, dest)
    assert dest.read_bytes() == b"previous"
    assert [p.name for p in dest.parent.iterdir()] == ["train.jsonl"]


def test_open_read_streams(storage: FirebaseStorage, gs_prefix: str, payload: Path):
    uri = f"{gs_prefix}/train.jsonl"
    storage.upload(payload, uri)
    with storage.open_read(uri) as fh:
        assert fh.readable()
        first = fh.readline()
        assert first.startswith(b'{"i": 0,')
        count = 1 + sum(1 for _ in fh)
        assert count == 12_000
        fh.seek(-5, os.SEEK_END)
        assert fh.read() == b'xxx"}\n'[-5:]
        fh.seek(0)
        assert fh.read(6) == b'{"i": '


def test_open_read_of_empty_object(storage: FirebaseStorage, gs_prefix: str, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    storage.upload(empty, f"{gs_prefix}/empty")
    with storage.open_read(f"{gs_prefix}/empty") as fh:
        assert fh.read() == b""
    assert storage.download(f"{gs_prefix}/empty", tmp_path / "e2").size == 0


def test_delete(storage: FirebaseStorage, gs_prefix: str, payload: Path):
    uri = f"{gs_prefix}/train.jsonl"
    storage.upload(payload, uri)
    storage.delete(uri)
    assert not storage.exists(uri)
    with pytest.raises(ObjectNotFound, match=r"train\.jsonl"):
        storage.delete(uri)


def test_missing_object(storage: FirebaseStorage, gs_prefix: str, tmp_path: Path):
    uri = f"{gs_prefix}/missing.jsonl"
    for call in (
        lambda: storage.download(uri, tmp_path / "m"),
        lambda: storage.open_read(uri),
        lambda: storage.stat(uri),
    ):
        with pytest.raises(ObjectNotFound) as err:
            call()
        assert str(err.value).startswith(f"{uri}: ")
    assert not (tmp_path / "m").exists()


def test_uri_checks(storage: FirebaseStorage, emulator_env: Emulator):
    with pytest.raises(InvalidURI, match="not 'other-bucket'"):
        storage.exists("gs://other-bucket/x")
    with pytest.raises(InvalidURI, match="folder prefix"):
        storage.exists(f"gs://{emulator_env.bucket}/dir/")
    with pytest.raises(InvalidURI, match="gs://bucket/path URIs only"):
        storage.exists("relative/path")


def test_unreachable_endpoint_fails_fast(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")  # nothing listens
    start = time.monotonic()
    with FirebaseStorage("dpo-test-bucket", timeout=1, retry_deadline=1) as fs:
        with pytest.raises(StorageUnavailable) as err:
            fs.exists("gs://dpo-test-bucket/x.jsonl")
    elapsed = time.monotonic() - start
    message = str(err.value)
    assert message.startswith("gs://dpo-test-bucket/x.jsonl: ")
    assert "connection refused" in message and "127.0.0.1" in message
    assert elapsed < 5, elapsed


def test_unreachable_endpoint_without_retries(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    clean_env.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    clean_env.setenv("DPO_STORAGE_RETRY_DEADLINE_S", "0")
    with FirebaseStorage("dpo-test-bucket", timeout=1) as fs:
        assert fs.retry_deadline == 0
        with pytest.raises(StorageUnavailable, match="connection refused"):
            fs.download("gs://dpo-test-bucket/x.jsonl", tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_instances_use_separate_firebase_apps(emulator_env: Emulator, gs_prefix: str, payload: Path):
    import firebase_admin

    before = set(firebase_admin._apps)  # the registry is what this test checks
    first = FirebaseStorage(emulator_env.bucket)
    second = FirebaseStorage(emulator_env.bucket)
    first.upload(payload, f"{gs_prefix}/a")
    assert second.exists(f"{gs_prefix}/a")
    assert len(set(firebase_admin._apps) - before) == 2
    first.close()
    first.close()  # idempotent
    assert len(set(firebase_admin._apps) - before) == 1
    del second  # never closed: garbage collection releases its app
    gc.collect()
    assert set(firebase_admin._apps) == before
