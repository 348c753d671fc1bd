"""Presets that name a Hugging Face Hub model (``Qwen/Qwen2.5-0.5B-Instruct``): is the Hub reachable?

The trainer loads such a name with ``from_pretrained``, which downloads it from the Hub. Where the
Hub cannot be reached (an air-gapped cluster, CI) that fails only once train starts, after minutes of
retries; ``validate`` asks first, once, with a short timeout, and refuses the run in one line that
says to stage the model and pass ``model_uri``. A model already in the local Hugging Face cache
needs no Hub.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

DEFAULT_ENDPOINT = "https://huggingface.co"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
LOCAL_FOLDERS = ("models",)  # configs say models/<name> for folders under DPO_MODELS_DIR
PROBE_TIMEOUT_S = 5.0


class HubUnreachable(Exception):
    """The Hub cannot be reached from this machine; the message says why."""


def hub_repo_id(name_or_path: str, workdir: Path) -> str | None:
    """The Hub repository ``name_or_path`` names, or None when it is a local folder (as transformers
    decides: an existing folder wins) or a path under ``models/`` (not built yet, but never the Hub)."""
    path = PurePosixPath(name_or_path)
    if path.is_absolute() or name_or_path.startswith(".") or not REPO_ID.match(name_or_path):
        return None
    if (workdir / name_or_path).exists() or path.parts[0] in LOCAL_FOLDERS:
        return None
    return name_or_path


def endpoint() -> str:
    """The Hub's address: ``HF_ENDPOINT`` (a mirror) or huggingface.co, as huggingface_hub reads it."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in ("1", "true", "yes", "on")


def cached_config(repo_id: str) -> str | None:
    """The path of ``repo_id``'s config.json in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # the Airflow image has no huggingface_hub
        return None
    found = try_to_load_from_cache(repo_id, "config.json")
    return found if isinstance(found, str) else None


def check_reachable(repo_id: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Return when the trainer could load ``repo_id``: it is in the local cache, or the Hub answers
    (any HTTP status: a gated or private model is the token's business, not the network's)."""
    if cached_config(repo_id) is not None:
        return
    if offline():
        raise HubUnreachable("HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache")
    url = f"{endpoint()}/api/models/{repo_id}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HubUnreachable(f"{endpoint()}: {reason}") from None


def hub_config(repo_id: str) -> dict[str, Any]:
    """``repo_id``'s config.json, from the local cache or the Hub (huggingface_hub's errors otherwise)."""
    import json

    from huggingface_hub import hf_hub_download

    path = cached_config(repo_id) or hf_hub_download(repo_id, "config.json", etag_timeout=PROBE_TIMEOUT_S)
    return json.loads(Path(path).read_text())
