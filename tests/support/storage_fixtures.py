"""Fixtures for the storage tests: a session-wide emulator and clean credential env."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.support.storage_emulator import Emulator, storage_emulator

CREDENTIAL_ENV_VARS = (
    "STORAGE_EMULATOR_HOST",
    "FIREBASE_CREDENTIALS_JSON",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "DPO_FIREBASE_CONN_ID",
    "GOOGLE_CLOUD_PROJECT",
    "GCLOUD_PROJECT",
    "DPO_STORAGE_TIMEOUT_S",
    "DPO_STORAGE_RETRY_DEADLINE_S",
    "DPO_LOCAL_STORAGE_ROOT",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No storage/credential variables from the developer's shell leak into a test."""
    for name in CREDENTIAL_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[Emulator]:
    """One in-memory gcp-storage-emulator for the whole session, stopped at the end."""
    with storage_emulator() as emulator:
        yield emulator


@pytest.fixture
def emulator_env(gcs_emulator: Emulator, clean_env: pytest.MonkeyPatch) -> Emulator:
    """Point google-cloud-storage (and so FirebaseStorage) at the emulator for one test."""
    for name, value in gcs_emulator.env.items():
        clean_env.setenv(name, value)
    return gcs_emulator


@pytest.fixture
def gs_prefix(emulator_env: Emulator) -> str:
    """A per-test folder in the emulator bucket, so tests never see each other's objects."""
    return f"gs://{emulator_env.bucket}/t-{uuid.uuid4().hex[:10]}"
