"""Where FirebaseStorage gets its credentials, first match wins: ``STORAGE_EMULATOR_HOST`` (anonymous),
``FIREBASE_CREDENTIALS_JSON`` (the JSON content), ``GOOGLE_APPLICATION_CREDENTIALS``, the Airflow
Connection named by ``DPO_FIREBASE_CONN_ID``, then application default credentials
(docs/datasets.md#firebase-storage). Never a file in the repository; errors never echo secrets.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from dpo_lib.settings import StorageSettings
from dpo_lib.storage.interface import AccessDenied

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
CREDENTIALS_JSON_ENV = "FIREBASE_CREDENTIALS_JSON"
ADC_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
CONN_ID_ENV = "DPO_FIREBASE_CONN_ID"
DEFAULT_EMULATOR_PROJECT = "dpo-local"
CONNECTION_EXTRA_KEYS = ("keyfile_dict", "service_account_json", "extra__google_cloud_platform__keyfile_dict")

HOW_TO_CONFIGURE = (
    f"set {CREDENTIALS_JSON_ENV} (service-account JSON), {ADC_ENV} (key file path), "
    f"{CONN_ID_ENV} (Airflow Connection id), or {EMULATOR_ENV} for the emulator"
)


@dataclass(frozen=True)
class ResolvedCredential:
    """A firebase-admin credential, the project id to use (None: let the credential say) and its source."""

    credential: Any  # firebase_admin.credentials.Base or google.auth.credentials.Credentials
    project_id: str | None
    source: str


def resolve_credential(uri: str) -> ResolvedCredential:
    """Pick credentials following the module docstring's order; ``uri`` only labels errors."""
    from firebase_admin import credentials

    if os.environ.get(EMULATOR_ENV):
        from google.auth.credentials import AnonymousCredentials

        # firebase-admin >= 6 accepts google.auth credentials directly and wraps them.
        project = os.environ.get(PROJECT_ENV) or DEFAULT_EMULATOR_PROJECT
        return ResolvedCredential(AnonymousCredentials(), project, f"emulator ({EMULATOR_ENV})")
    if raw := os.environ.get(CREDENTIALS_JSON_ENV):
        info = _parse_service_account(uri, raw, f"env {CREDENTIALS_JSON_ENV}")
        return ResolvedCredential(
            _certificate(uri, info, f"env {CREDENTIALS_JSON_ENV}"), None, f"env {CREDENTIALS_JSON_ENV}"
        )
    if os.environ.get(ADC_ENV):
        return ResolvedCredential(credentials.ApplicationDefault(), None, f"env {ADC_ENV}")
    if conn_id := StorageSettings.from_env().firebase_conn_id:
        source = f"Airflow Connection {conn_id!r} (env {CONN_ID_ENV})"
        info = _parse_service_account(uri, _connection_keyfile(uri, conn_id, source), source)
        return ResolvedCredential(_certificate(uri, info, source), None, source)
    return ResolvedCredential(credentials.ApplicationDefault(), None, "application default credentials")


def _parse_service_account(uri: str, raw: str | dict, source: str) -> dict:
    if isinstance(raw, dict):
        info = raw
    else:
        try:
            info = json.loads(raw)
        except (TypeError, ValueError) as exc:
            # The message of a JSON error quotes no content, only the position.
            reason = getattr(exc, "msg", type(exc).__name__)
            raise AccessDenied(uri, f"{source} is not valid JSON ({reason})") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise AccessDenied(uri, f'{source} is not a service-account key (expected "type": "service_account")')
    return info


def _certificate(uri: str, info: dict, source: str) -> Any:
    from firebase_admin import credentials

    try:
        return credentials.Certificate(info)
    except ValueError:
        # The library's message may quote key material; report only the source.
        raise AccessDenied(uri, f"{source} holds an invalid service-account key") from None


def _connection_keyfile(uri: str, conn_id: str, source: str) -> str | dict:
    try:
        from airflow.sdk import BaseHook
    except ImportError:
        raise AccessDenied(uri, f"{source} is set but Airflow is not installed") from None
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # noqa: BLE001 - AirflowNotFoundException or any secrets-backend failure
        raise AccessDenied(uri, f"cannot read {source}: {type(exc).__name__}: {exc}") from None
    extra = conn.extra_dejson or {}
    for key in CONNECTION_EXTRA_KEYS:
        if extra.get(key):
            return extra[key]
    raise AccessDenied(uri, f"{source} has none of the extra fields {', '.join(CONNECTION_EXTRA_KEYS)}")
