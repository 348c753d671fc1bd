"""LocalStorage: round trips, URI forms, root confinement, atomic copies, and only regular files read."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import threading
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from dpo_lib.io import TEMP_SUFFIX
from dpo_lib.storage import (
    AccessDenied,
    InvalidURI,
    LocalStorage,
    ObjectNotFound,
    StorageError,
    TransferCorrupted,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def storage(root: Path) -> LocalStorage:
    return LocalStorage(root)


@pytest.fixture
def src_file(tmp_path: Path) -> Path:
    path = tmp_path / "src.jsonl"
    path.write_bytes(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 100)
    return path


def leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(f"*{TEMP_SUFFIX}")]


def test_round_trip_with_relative_paths(storage: LocalStorage, root: Path, src_file: Path, tmp_path: Path):
    info = storage.upload(src_file, "datasets/v1/train.jsonl")
    assert info.size == src_file.stat().st_size
    assert info.md5 == hashlib.md5(src_file.read_bytes()).hexdigest()
    assert (root / "datasets/v1/train.jsonl").read_bytes() == src_file.read_bytes()
    assert storage.exists("datasets/v1/train.jsonl")
    assert not storage.exists("datasets/v1/missing.jsonl")
    assert not storage.exists("datasets/v1")  # directories are prefixes, not objects
    assert storage.stat("datasets/v1/train.jsonl").size == info.size

    result = storage.download("datasets/v1/train.jsonl", tmp_path / "out" / "copy.jsonl")
    assert result.path.read_bytes() == src_file.read_bytes()
    assert result.size == src_file.stat().st_size
    assert result.sha256 == hashlib.sha256(src_file.read_bytes()).hexdigest()

    with storage.open_read("datasets/v1/train.jsonl") as fh:
        first = fh.readline()
    assert first.startswith(b'{"prompt"')

    storage.delete("datasets/v1/train.jsonl")
    assert not storage.exists("datasets/v1/train.jsonl")
    assert leftovers(root) == [] and leftovers(tmp_path) == []


def test_upload_replaces_existing_object(storage: LocalStorage, root: Path, tmp_path: Path):
    (tmp_path / "a").write_bytes(b"old")
    (tmp_path / "b").write_bytes(b"new content")
    storage.upload(tmp_path / "a", "x.bin")
    storage.upload(tmp_path / "b", "x.bin")
    assert (root / "x.bin").read_bytes() == b"new content"


def test_file_uris(storage: LocalStorage, root: Path, src_file: Path, tmp_path: Path):
    uri = (root / "dir with space" / "f.jsonl").as_uri()
    assert "%20" in uri
    storage.upload(src_file, uri)
    assert storage.exists(uri)
    assert storage.exists("dir with space/f.jsonl")
    assert storage.list(root.as_uri()) == [uri]
    assert storage.list(f"file://localhost{root}") == [uri]
    assert storage.download(uri, tmp_path / "d.jsonl").size == src_file.stat().st_size
    storage.delete(uri)
    assert not storage.exists(uri)


def test_list_is_recursive_sorted_and_directory_scoped(storage: LocalStorage, root: Path, src_file: Path):
    for rel in ("data/b.jsonl", "data/a.jsonl", "data/sub/c.jsonl", "data2/d.jsonl", "other.txt"):
        storage.upload(src_file, rel)
    (root / "data" / f".a.jsonl.0123abcd{TEMP_SUFFIX}").write_bytes(b"in progress")
    assert storage.list("data") == [str(root / p) for p in ("data/a.jsonl", "data/b.jsonl", "data/sub/c.jsonl")]
    assert storage.list("data/") == storage.list("data")
    assert storage.list(str(root / "data")) == storage.list("data")
    assert len(storage.list(".")) == 5
    with pytest.raises(InvalidURI, match="empty URI"):
        storage.list("")
    assert storage.list("missing") == []
    assert storage.list("other.txt") == []  # a file is not a directory prefix


def test_missing_objects(storage: LocalStorage, tmp_path: Path):
    for call in (
        lambda: storage.download("nope.bin", tmp_path / "x"),
        lambda: storage.open_read("nope.bin"),
        lambda: storage.delete("nope.bin"),
        lambda: storage.stat("nope.bin"),
    ):
        with pytest.raises(ObjectNotFound, match=r"nope\.bin"):
            call()
    assert not (tmp_path / "x").exists()


def test_upload_of_missing_local_file_names_it(storage: LocalStorage, tmp_path: Path):
    with pytest.raises(ObjectNotFound, match="no-such-file"):
        storage.upload(tmp_path / "no-such-file", "x.bin")


def test_directories_are_not_objects(storage: LocalStorage, root: Path, tmp_path: Path, src_file: Path):
    (root / "d").mkdir()
    with pytest.raises(StorageError, match="is a directory"):
        storage.delete("d")
    with pytest.raises(StorageError, match="is a directory"):
        storage.upload(src_file, "d")
    storage.upload(src_file, "f")
    with pytest.raises(StorageError, match="is a directory"):
        storage.download("f", tmp_path)


@pytest.mark.parametrize("uri", ["../outside.txt", "a/../../outside.txt", "a/./../../../etc/passwd"])
def test_refuses_dotdot_escapes(storage: LocalStorage, uri: str, src_file: Path, tmp_path: Path):
    (tmp_path / "outside.txt").write_text("secret")
    with pytest.raises(AccessDenied, match="outside the storage root") as err:
        storage.exists(uri)
    assert uri in str(err.value)
    with pytest.raises(AccessDenied):
        storage.upload(src_file, uri)
    with pytest.raises(AccessDenied):
        storage.open_read(uri)
    with pytest.raises(AccessDenied):
        storage.delete(uri)
    assert (tmp_path / "outside.txt").read_text() == "secret"


def test_dotdot_that_stays_inside_is_fine(storage: LocalStorage, src_file: Path):
    storage.upload(src_file, "a/b/../c.jsonl")
    assert storage.exists("a/c.jsonl")


def test_refuses_absolute_paths_outside_root(storage: LocalStorage, tmp_path: Path, src_file: Path):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("x")
    for uri in (str(outside), outside.as_uri(), "/etc/passwd", "file:///etc/passwd"):
        with pytest.raises(AccessDenied, match="outside the storage root"):
            storage.open_read(uri)
    with pytest.raises(AccessDenied):
        storage.upload(src_file, str(tmp_path / "new.txt"))
    assert not (tmp_path / "new.txt").exists()


def test_absolute_path_inside_root_is_fine(storage: LocalStorage, root: Path, src_file: Path):
    storage.upload(src_file, str(root / "abs.jsonl"))
    assert storage.exists("abs.jsonl")


def test_refuses_symlink_escapes(storage: LocalStorage, root: Path, tmp_path: Path, src_file: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (root / "linkdir").symlink_to(outside, target_is_directory=True)
    (root / "linkfile").symlink_to(outside / "secret.txt")
    for uri in ("linkdir/secret.txt", "linkfile", (root / "linkfile").as_uri()):
        with pytest.raises(AccessDenied, match="outside the storage root"):
            storage.open_read(uri)
    with pytest.raises(AccessDenied):
        storage.upload(src_file, "linkdir/planted.txt")
    assert not (outside / "planted.txt").exists()
    with pytest.raises(AccessDenied):
        storage.delete("linkfile")
    assert (outside / "secret.txt").exists()
    # Listing never reveals what lies behind an escaping link.
    storage.upload(src_file, "real.jsonl")
    assert storage.list(".") == [str(root / "real.jsonl")]


def test_symlink_inside_root_is_followed(storage: LocalStorage, root: Path, src_file: Path):
    storage.upload(src_file, "real/f.jsonl")
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    assert storage.exists("alias/f.jsonl")


def test_root_itself_behind_a_symlink(tmp_path: Path, src_file: Path):
    real = tmp_path / "real-root"
    real.mkdir()
    (tmp_path / "root-link").symlink_to(real, target_is_directory=True)
    storage = LocalStorage(tmp_path / "root-link")
    storage.upload(src_file, "f.jsonl")
    assert storage.exists(str(tmp_path / "root-link" / "f.jsonl"))


def test_rejects_other_schemes(storage: LocalStorage):
    with pytest.raises(InvalidURI, match="gs://"):
        storage.exists("gs://bucket/x")


class _FailingReader(io.RawIOBase):
    """Yields some bytes, then fails as a dying disk or network mount would."""

    def __init__(self, data: bytes, fail_after: int) -> None:
        self._data, self._pos, self._fail_after = data, 0, fail_after

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self._fail_after:
            raise OSError(5, "Input/output error")
        n = min(len(buffer), self._fail_after - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def test_download_failure_mid_copy_leaves_nothing(
    storage: LocalStorage, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = os.urandom(3 << 20)
    (root / "big.bin").write_bytes(data)
    monkeypatch.setattr(storage, "open_read", lambda uri: _FailingReader(data, fail_after=1 << 20))
    dest_dir = tmp_path / "dl"
    with pytest.raises(StorageError, match=r"big\.bin: Input/output error"):
        storage.download("big.bin", dest_dir / "big.bin")
    assert not (dest_dir / "big.bin").exists()
    assert list(dest_dir.iterdir()) == []  # no temp file left behind


def test_failed_download_keeps_previous_file(
    storage: LocalStorage, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    data = os.urandom(3 << 20)
    (root / "big.bin").write_bytes(data)
    dest = tmp_path / "big.bin"
    dest.write_bytes(b"previous version")
    monkeypatch.setattr(storage, "open_read", lambda uri: _FailingReader(data, fail_after=2 << 20))
    with pytest.raises(StorageError):
        storage.download("big.bin", dest)
    assert dest.read_bytes() == b"previous version"
    assert leftovers(tmp_path) == []


def test_download_detects_size_change(
    storage: LocalStorage, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (root / "f.bin").write_bytes(b"0123456789")
    monkeypatch.setattr(storage, "open_read", lambda uri: io.BytesIO(b"01234"))  # truncated underneath us
    with pytest.raises(TransferCorrupted, match="size mismatch"):  # a StorageError staging retries
        storage.download("f.bin", tmp_path / "f.bin")
    assert not (tmp_path / "f.bin").exists()
    assert leftovers(tmp_path) == []


def test_interrupted_upload_leaves_previous_object(
    storage: LocalStorage, root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import dpo_lib.storage.local as local_module

    (root / "model.bin").write_bytes(b"v1")
    (tmp_path / "v2").write_bytes(b"v2" * 1000)

    def interrupted_copy(src: BinaryIO, dst: BinaryIO) -> None:
        dst.write(src.read(10))
        raise KeyboardInterrupt  # e.g. the Airflow task is killed

    monkeypatch.setattr(local_module, "copy_stream", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        storage.upload(tmp_path / "v2", "model.bin")
    assert (root / "model.bin").read_bytes() == b"v1"
    assert leftovers(root) == []


def test_downloaded_file_gets_normal_permissions(storage: LocalStorage, root: Path, tmp_path: Path):
    (root / "f.bin").write_bytes(b"x")
    umask = os.umask(0o022)
    try:
        storage.download("f.bin", tmp_path / "f.bin")
    finally:
        os.umask(umask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


def call_that_may_block_on(fifo: Path, call: Any) -> Any:
    """``call()`` in a thread; if it is still blocked after a while (in ``open()`` of ``fifo``,
    waiting for a writer), release it by opening the FIFO for writing, then fail."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        with open(fifo, "wb"):
            pass
        thread.join(10)
        pytest.fail(f"blocked opening the FIFO {fifo}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_open_read_refuses_a_fifo_at_once(storage: LocalStorage, root: Path):
    fifo = root / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match=r"pipe: is a FIFO \(named pipe\), not a regular file"):
        call_that_may_block_on(fifo, lambda: storage.open_read("pipe"))
    with pytest.raises(StorageError, match="not a regular file"):
        call_that_may_block_on(fifo, lambda: storage.download("pipe", root / "copy"))
    assert not storage.exists("pipe")


def test_upload_refuses_a_fifo_as_its_source(storage: LocalStorage, tmp_path: Path):
    fifo = tmp_path / "source-pipe"
    os.mkfifo(fifo)
    with pytest.raises(StorageError, match="is a FIFO"):
        call_that_may_block_on(fifo, lambda: storage.upload(fifo, "x.bin"))
    assert not storage.exists("x.bin")


def test_a_symlink_to_a_fifo_inside_the_root_is_refused_too(storage: LocalStorage, root: Path):
    os.mkfifo(root / "pipe")
    (root / "link").symlink_to(root / "pipe")
    with pytest.raises(StorageError, match="is a FIFO"):
        call_that_may_block_on(root / "pipe", lambda: storage.open_read("link"))


def test_sockets_devices_and_directories_are_not_read(storage: LocalStorage, root: Path):
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(root / "sock"))
        with pytest.raises(StorageError, match="is a socket, not a regular file"):
            storage.open_read("sock")
    with pytest.raises(StorageError, match="is a character device, not a regular file"):
        LocalStorage("/dev").open_read("null")
    (root / "dir").mkdir()
    with pytest.raises(StorageError, match="is a directory"):
        storage.open_read("dir")


def test_open_regular_file_checks_the_open_descriptor_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A FIFO swapped in between the check and the open: O_NONBLOCK keeps open() from waiting, and the
    descriptor's own type is checked."""
    import dpo_lib.storage.local as local_module

    class StatSaysRegular:
        """The os module as local.py sees it, except that stat() calls every path a regular file."""

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        @staticmethod
        def stat(path: Any) -> os.stat_result:
            return os.stat(__file__)

    fifo = tmp_path / "swapped"
    os.mkfifo(fifo)
    monkeypatch.setattr(local_module, "os", StatSaysRegular())  # the check before opening is fooled
    with pytest.raises(local_module.NotRegularFile, match="is a FIFO"):
        call_that_may_block_on(fifo, lambda: local_module.open_regular_file(fifo))
