"""The stored copy on Firebase Storage (gcp-storage-emulator): complete with its marker, and a retry after a
cut that never leaves a partial copy a reader would take for complete.

The cut is a storage that fails after some uploads (as a dropped connection does: GCS publishes an
object only once its upload completed, so a cut leaves some objects whole and the rest absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dpo_lib.results.upload import MARKER, IncompleteUpload, download_complete, read_marker, upload_files
from dpo_lib.storage import FirebaseStorage, StorageUnavailable


class CutAfter:
    """A FirebaseStorage whose connection drops after ``uploads`` more uploads; counts them."""

    def __init__(self, storage: FirebaseStorage, uploads: int | None = None) -> None:
        self.storage, self.left, self.uploads = storage, uploads, 0

    def upload(self, local_path, uri):
        if self.left is not None:
            if self.left == 0:
                raise StorageUnavailable(uri, "connection reset by peer")
            self.left -= 1
        self.uploads += 1
        return self.storage.upload(local_path, uri)

    def __getattr__(self, name):
        return getattr(self.storage, name)


@pytest.fixture
def storage(emulator_env):
    with FirebaseStorage(emulator_env.bucket, timeout=10, retry_deadline=0) as fs:
        yield fs


def model_files(root: Path, seed: int) -> dict[str, Path]:
    files = {"final/model.safetensors": os.urandom(300_000), "final/config.json": b'{"seed": %d}' % seed,
             "final/README.md": b"# card %d" % seed, "metrics.json": b'{"eval": {"loss": 0.%d}}' % seed}  # fmt: skip
    out = {}
    for rel, data in files.items():
        path = root / f"v{seed}" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[rel] = path
    return out


def assert_downloads(storage, prefix: str, files: dict[str, Path], dest: Path) -> None:
    download_complete(storage, prefix, dest)
    for rel, path in files.items():
        assert (dest / rel).read_bytes() == path.read_bytes(), rel


def test_a_complete_copy_and_its_marker(storage, gs_prefix, tmp_path):
    files = model_files(tmp_path, 1)
    marker = upload_files(storage, files, f"{gs_prefix}/run", info={"run_id": "r1"})
    assert read_marker(storage, f"{gs_prefix}/run/") == marker
    assert sorted(f["path"] for f in marker["files"]) == sorted(files)
    assert marker["bytes"] == sum(p.stat().st_size for p in files.values()) and marker["run_id"] == "r1"
    assert storage.list(f"{gs_prefix}/run")[-1] == f"{gs_prefix}/run/{MARKER}"
    assert_downloads(storage, f"{gs_prefix}/run", files, tmp_path / "down")
    download_complete(storage, f"{gs_prefix}/run", tmp_path / "final-only", under="final/")
    assert sorted(p.name for p in (tmp_path / "final-only").iterdir()) == ["README.md", "config.json",
                                                                           "model.safetensors"]  # fmt: skip


def test_a_retry_after_a_cut_leaves_nothing_complete_looking_until_it_finishes(storage, gs_prefix, tmp_path):
    prefix = f"{gs_prefix}/run"
    old = model_files(tmp_path, 1)
    upload_files(storage, old, prefix)
    new = model_files(tmp_path, 2)  # the same run's files, different bytes (say, a model trained again)

    with pytest.raises(StorageUnavailable):
        upload_files(CutAfter(storage, uploads=2), new, prefix)  # cut after 2 of 4 files
    # Every file is there (two new, two old), but nothing reads as complete: the marker went first.
    assert sorted(storage.list(prefix)) == sorted(f"{prefix}/{rel}" for rel in new)
    with pytest.raises(IncompleteUpload):
        read_marker(storage, prefix)
    with pytest.raises(IncompleteUpload):
        download_complete(storage, prefix, tmp_path / "reader")
    assert not (tmp_path / "reader").exists()

    retry = CutAfter(storage)
    marker = upload_files(retry, new, prefix)
    assert retry.uploads == len(new) + 1  # every file again, then the marker
    assert_downloads(storage, prefix, new, tmp_path / "after")
    again = CutAfter(storage)
    assert upload_files(again, new, prefix) == marker and again.uploads == 0  # complete already: nothing to do


def test_a_reader_refuses_a_file_that_differs_from_the_marker(storage, gs_prefix, tmp_path):
    prefix = f"{gs_prefix}/run"
    files = model_files(tmp_path, 3)
    upload_files(storage, files, prefix)
    swapped = tmp_path / "other.json"
    swapped.write_bytes(b'{"seed": 99}')
    storage.upload(swapped, f"{prefix}/final/config.json")  # replaced behind the marker's back
    with pytest.raises(IncompleteUpload, match="config.json"):
        download_complete(storage, prefix, tmp_path / "reader")
