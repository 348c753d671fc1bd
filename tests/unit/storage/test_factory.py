"""get_storage, parse_uri and the cost of importing dpo_lib.storage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_lib.settings import PROJECT_DIR
from dpo_lib.storage import (
    FirebaseStorage,
    InvalidURI,
    LocalStorage,
    get_storage,
    parse_uri,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_plain_paths_and_file_uris_get_local_storage(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    for uri in ("data/train.jsonl", "/abs/train.jsonl", "file:///abs/train.jsonl", "FILE:///abs/x"):
        storage = get_storage(uri, local_root=tmp_path)
        assert isinstance(storage, LocalStorage)
        assert storage.root == tmp_path.resolve()


def test_local_root_precedence(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    """The argument, else DPO_LOCAL_STORAGE_ROOT, else the workdir (DPO_WORKDIR, else the project): never the cwd."""
    env_root, arg_root, workdir, cwd = tmp_path / "env", tmp_path / "arg", tmp_path / "work", tmp_path / "cwd"
    cwd.mkdir()
    clean_env.chdir(cwd)
    clean_env.delenv("DPO_WORKDIR", raising=False)
    assert get_storage("x").root == PROJECT_DIR
    clean_env.setenv("DPO_WORKDIR", str(workdir))
    assert get_storage("x").root == workdir.resolve()
    clean_env.setenv("DPO_LOCAL_STORAGE_ROOT", str(env_root))
    assert get_storage("x").root == env_root.resolve()
    assert get_storage("x", local_root=arg_root).root == arg_root.resolve()
    assert get_storage("x", local_root=str(arg_root)).root == arg_root.resolve()


def test_gs_uris_get_firebase_storage_without_credentials(clean_env: pytest.MonkeyPatch):
    storage = get_storage("gs://dpo-prod-data/datasets/train.jsonl")
    assert isinstance(storage, FirebaseStorage)
    assert storage.bucket_name == "dpo-prod-data"
    storage.close()


@pytest.mark.parametrize("uri", ["s3://bucket/key", "https://example.com/x", "hdfs://nn/path"])
def test_unknown_scheme_is_invalid(uri: str):
    scheme = uri.split(":", 1)[0]
    with pytest.raises(InvalidURI) as err:
        get_storage(uri)
    message = str(err.value)
    assert message.startswith(f"{uri}: ")
    assert f"unsupported scheme {scheme!r}" in message
    assert "file://" in message and "gs://" in message


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "path"),
    [
        ("data/x.jsonl", "", "", "data/x.jsonl"),
        ("weird:name/x", "", "", "weird:name/x"),  # a colon without // is part of a path
        ("file:///a/b%20c.txt", "file", "", "/a/b c.txt"),
        ("file://localhost/a/b", "file", "", "/a/b"),
        ("gs://my-bucket/a/b%20c?.txt", "gs", "my-bucket", "a/b%20c?.txt"),  # object names are literal
        ("gs://my-bucket", "gs", "my-bucket", ""),
        ("GS://my-bucket/x", "gs", "my-bucket", "x"),
    ],
)
def test_parse_uri(uri: str, scheme: str, bucket: str, path: str):
    parsed = parse_uri(uri)
    assert (parsed.scheme, parsed.bucket, parsed.path) == (scheme, bucket, path)


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "empty URI"),
        ("gs://", "no bucket"),
        ("gs://Upper/x", "invalid bucket name"),
        ("file://server/share/x", "must be absolute"),
        ("file://", "no path"),
        ("a\x00b", "NUL"),
    ],
)
def test_parse_uri_rejects(uri: str, reason: str):
    with pytest.raises(InvalidURI, match=reason):
        parse_uri(uri)


def test_import_is_cheap():
    """DAG files import dpo_lib.storage; it must not drag in firebase_admin, google.cloud or torch."""
    code = (
        "import json, sys\n"
        "import dpo_lib.storage as s\n"
        "s.get_storage('data/x', local_root='.')\n"
        "s.LocalStorage\n"
        "s.FirebaseStorage\n"  # the class itself is cheap too; the SDK loads on first call
        "heavy = ('firebase_admin', 'google.cloud', 'google.auth', 'torch', 'airflow')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
