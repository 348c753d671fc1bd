"""A fake credential with a unique marker in every field, for tests that prove secrets never leak.

The service account is shaped like a real one (the Firebase client parses it) but useless:
its key is the marker, its token endpoint a closed loopback port. A test puts it (and its own
extra variables) into an environment, runs something, then searches outputs for ``MARKER``.
"""

from __future__ import annotations

import json
import uuid

MARKER = f"planted-secret-{uuid.uuid4().hex}"
SERVICE_ACCOUNT = json.dumps({
    "type": "service_account", "project_id": "dpo-faults", "private_key_id": MARKER,
    "private_key": f"-----BEGIN PRIVATE KEY-----\n{MARKER}\n-----END PRIVATE KEY-----\n",
    "client_email": f"{MARKER}@dpo-faults.iam.gserviceaccount.com", "client_id": "1",
    "token_uri": "http://127.0.0.1:1/token",
})  # fmt: skip
# The same credential as the service account variable, an Airflow Connection and a hub token.
CREDENTIALS = {
    "FIREBASE_CREDENTIALS_JSON": SERVICE_ACCOUNT,
    "AIRFLOW_CONN_DPO_FIREBASE": json.dumps(
        {"conn_type": "google_cloud_platform", "password": MARKER, "extra": {"keyfile_dict": SERVICE_ACCOUNT}}
    ),
    "HF_TOKEN": f"hf_{MARKER}",
}
