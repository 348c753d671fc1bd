"""The credential order of FirebaseStorage, checked without any real Google account."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_lib.storage import AccessDenied, FirebaseStorage
from dpo_lib.storage.firebase_credentials import resolve_credential

URI = "gs://dpo-test-bucket/x"


@pytest.fixture(scope="module")
def service_account() -> dict:
    """A syntactically valid service-account key for a project that does not exist."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "dpo-sa-project",
        "private_key_id": "0" * 40,
        "private_key": pem,
        "client_email": "dpo-test@dpo-sa-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }


@pytest.fixture
def no_ambient_credentials(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Hide gcloud's user credentials and skip the GCE metadata probe (slow without network)."""
    clean_env.setenv("HOME", str(tmp_path))
    clean_env.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    clean_env.setenv("NO_GCE_CHECK", "True")
    return clean_env


def test_emulator_uses_anonymous_credentials(clean_env: pytest.MonkeyPatch, service_account: dict):
    from google.auth.credentials import AnonymousCredentials

    clean_env.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:9")
    clean_env.setenv("FIREBASE_CREDENTIALS_JSON", json.dumps(service_account))  # the emulator wins
    resolved = resolve_credential(URI)
    assert isinstance(resolved.credential, AnonymousCredentials)
    assert resolved.project_id == "dpo-local"
    clean_env.setenv("GOOGLE_CLOUD_PROJECT", "my-emulated-project")
    assert resolve_credential(URI).project_id == "my-emulated-project"


def test_credentials_json_env(clean_env: pytest.MonkeyPatch, service_account: dict, tmp_path: Path):
    from firebase_admin import credentials

    clean_env.setenv("FIREBASE_CREDENTIALS_JSON", json.dumps(service_account))
    clean_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "ignored.json"))  # lower priority
    resolved = resolve_credential(URI)
    assert isinstance(resolved.credential, credentials.Certificate)
    assert resolved.credential.project_id == "dpo-sa-project"
    assert resolved.source == "env FIREBASE_CREDENTIALS_JSON"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"type": "service_account", "private_key": "-----BEGIN SECRET', "not valid JSON"),
        ('{"type": "authorized_user", "refresh_token": "SECRET"}', "not a service-account key"),
        (
            '{"type": "service_account", "private_key": "SECRET", "client_email": "a@b"}',
            "invalid service-account",
        ),
    ],
)
def test_bad_credentials_json_is_reported_without_content(clean_env: pytest.MonkeyPatch, raw: str, reason: str):
    clean_env.setenv("FIREBASE_CREDENTIALS_JSON", raw)
    with pytest.raises(AccessDenied, match=reason) as err:
        resolve_credential(URI)
    assert str(err.value).startswith(f"{URI}: env FIREBASE_CREDENTIALS_JSON")
    assert "SECRET" not in str(err.value)
    # Nothing chained either: a traceback would otherwise print the library error quoting the input.
    assert err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__


def test_application_default_credentials_env(clean_env: pytest.MonkeyPatch, tmp_path: Path):
    from firebase_admin import credentials

    clean_env.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    clean_env.setenv("DPO_FIREBASE_CONN_ID", "never_looked_up")  # lower priority
    resolved = resolve_credential(URI)
    assert isinstance(resolved.credential, credentials.ApplicationDefault)
    assert resolved.source == "env GOOGLE_APPLICATION_CREDENTIALS"


@pytest.mark.parametrize("field", ["keyfile_dict", "service_account_json"])
def test_airflow_connection(clean_env: pytest.MonkeyPatch, service_account: dict, field: str):
    """Airflow resolves AIRFLOW_CONN_<ID> env vars through its secrets backends, no database needed."""
    from firebase_admin import credentials

    value = json.dumps(service_account) if field == "keyfile_dict" else service_account
    conn = {"conn_type": "google_cloud_platform", "extra": {field: value}}
    clean_env.setenv("AIRFLOW_CONN_DPO_FIREBASE_TEST", json.dumps(conn))
    clean_env.setenv("DPO_FIREBASE_CONN_ID", "dpo_firebase_test")
    resolved = resolve_credential(URI)
    assert isinstance(resolved.credential, credentials.Certificate)
    assert resolved.credential.project_id == "dpo-sa-project"
    assert "dpo_firebase_test" in resolved.source


def test_airflow_connection_problems(clean_env: pytest.MonkeyPatch):
    clean_env.setenv("DPO_FIREBASE_CONN_ID", "dpo_missing_conn")
    with pytest.raises(AccessDenied, match="cannot read Airflow Connection 'dpo_missing_conn'"):
        resolve_credential(URI)
    clean_env.setenv("AIRFLOW_CONN_DPO_EMPTY", json.dumps({"conn_type": "generic", "extra": {"x": 1}}))
    clean_env.setenv("DPO_FIREBASE_CONN_ID", "dpo_empty")
    with pytest.raises(AccessDenied, match="has none of the extra fields keyfile_dict, service_account_json"):
        resolve_credential(URI)


def test_no_credentials_at_all(no_ambient_credentials: pytest.MonkeyPatch):
    """Without any source, the first call fails with AccessDenied listing what to set."""
    with FirebaseStorage("dpo-test-bucket", timeout=1, retry_deadline=0) as fs:
        with pytest.raises(AccessDenied) as err:
            fs.exists(URI)
    message = str(err.value)
    assert message.startswith(f"{URI}: no Google credentials found")
    for name in ("FIREBASE_CREDENTIALS_JSON", "GOOGLE_APPLICATION_CREDENTIALS", "DPO_FIREBASE_CONN_ID"):
        assert name in message


def test_constructing_needs_no_credentials(no_ambient_credentials: pytest.MonkeyPatch):
    """Building the object (e.g. while a DAG file is parsed) must not look for credentials."""
    fs = FirebaseStorage("dpo-test-bucket")
    assert fs.credential_source is None
    fs.close()
