"""Airflow Assets of the fine-tune: ``stage`` emits the dataset (:data:`DATASET_ALIAS`) when its content
changed, ``promote`` the registered model ``models:/<name>`` (:data:`MODEL_ALIAS`) when it gets a new
champion. Both declare an alias as outlet and name the asset at run time (docs/results.md#assets).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, AssetAlias

from dpo_lib.settings import Settings

log = logging.getLogger(__name__)

DATASET_ALIAS = AssetAlias(name="dpo-staged-dataset")
MODEL_ALIAS = AssetAlias(name="dpo-registered-model")
PROMOTIONS = ("promoted", "first")


def dataset_asset(uri: str, local_root: Path | None = None) -> Asset:
    """The Asset of the dataset at ``uri``: a ``gs://`` URI as it is, a local one as ``file:///abs/path``."""
    from dpo_lib.storage.uri import parse_uri

    parsed = parse_uri(uri)
    if parsed.is_local:
        root = local_root if local_root is not None else Settings.from_env().local_storage_root
        path = Path(parsed.path) if Path(parsed.path).is_absolute() else root / parsed.path
        return Asset(uri=path.resolve().as_uri())
    return Asset(uri=uri)


def model_asset(registered_model_name: str) -> Asset:
    """The Asset of a registered model: MLflow's URI of it, ``models:/<name>``."""
    return Asset(uri=f"models:/{registered_model_name}")


def emit_dataset(outlet_events: Any, manifest: Mapping[str, Any], *, dag_id: str, run_id: str,
                 settings: Settings | None = None) -> Asset | None:  # fmt: skip
    """Add an event of the staged dataset to ``stage``'s alias if its content changed; returns the asset or None."""
    settings = settings or Settings.from_env()
    asset = dataset_asset(manifest["dataset_uri"], settings.local_storage_root)
    previous = _swap_digest(settings.artifacts_root, asset.uri, manifest["sha256"])
    if previous == manifest["sha256"]:
        log.info("dataset %s is unchanged since it was last staged (sha256 %s): no asset event", asset.uri, previous)
        return None
    extra = {"sha256": manifest["sha256"], "previous_sha256": previous, "record_count": manifest.get("record_count"),
             "dag_id": dag_id, "run_id": run_id}  # fmt: skip
    outlet_events[DATASET_ALIAS].add(asset, extra=extra)
    log.info("asset event: %s (sha256 %s, was %s)", asset.uri, manifest["sha256"], previous)
    return asset


def emit_model(outlet_events: Any, promotion: Mapping[str, Any] | None, *, dag_id: str, run_id: str) -> Asset | None:
    """Add an event of the registered model to ``promote``'s alias when ``promotion`` (promotion.json) put a new
    version in place (decision ``promoted`` or ``first``); returns the asset or None.

    The promote task calls it with ``get_current_context()["outlet_events"]`` once it has decided.
    """
    promotion = promotion or {}
    name = promotion.get("registered_model_name") or promotion.get("model_name")
    if promotion.get("decision") not in PROMOTIONS or not isinstance(name, str) or not name:
        return None
    versions = promotion.get("versions") if isinstance(promotion.get("versions"), dict) else {}
    asset = model_asset(name)
    extra = {"version": versions.get("challenger", promotion.get("version")), "decision": promotion["decision"],
             "metric": promotion.get("metric"), "dag_id": dag_id, "run_id": run_id}  # fmt: skip
    outlet_events[MODEL_ALIAS].add(asset, extra={k: v for k, v in extra.items() if v is not None})
    return asset


def _swap_digest(root: Path, uri: str, sha256: str) -> str | None:
    """Record ``sha256`` as the last staged content of ``uri`` (under ``root/.dataset-digests/``, beside the
    experiments' folders, whose names start with a letter or digit); return the one recorded before (None: first)."""
    from dpo_lib.io import atomic_write_text

    record = root / ".dataset-digests" / hashlib.sha256(uri.encode()).hexdigest()
    try:
        previous = record.read_text().strip() or None
    except OSError:
        previous = None
    if previous != sha256:
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, sha256 + "\n")
    return previous
