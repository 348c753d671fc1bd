"""The model registry (MLflow's): a run's model as a version of its registered model, and the champion alias.

A version's ``source`` is the stored copy's ``final/`` (``<output_uri>final``); its ``dpo.output_uri`` tag
is the prefix whose ``upload.json`` says the copy is complete, which is what the champion's download reads.
A tracking server refuses a local path as a source (MLflow's own rule: it would be a path on the server),
so with a server and local storage the source is ``runs:/<run_id>/final`` and the tag says where the copy is.
Registering is idempotent: a retry finds the version it made (same MLflow run, same output_uri).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dpo_lib.results.locations import CHAMPION_ALIAS

log = logging.getLogger(__name__)

OUTPUT_TAG = "dpo.output_uri"


def register_version(client: Any, name: str, *, output_uri: str, run_id: str, tags: Mapping[str, str]) -> Any:
    """The version of ``name`` holding the copy at ``output_uri`` made by MLflow run ``run_id`` (made once)."""
    for version in client.search_model_versions(f"name='{name}' and run_id='{run_id}'"):
        if version.tags.get(OUTPUT_TAG) == output_uri:
            return version
    try:
        client.create_registered_model(name, description="DPO fine-tunes (dpo_lib); the champion alias is the "
                                                         "version the champion gate chose")  # fmt: skip
    except Exception as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
    all_tags = {**tags, OUTPUT_TAG: output_uri}
    description = f"stored at {output_uri} (upload.json lists its files)"
    try:
        return client.create_model_version(name, f"{output_uri}final", run_id=run_id, tags=all_tags,
                                           description=description)  # fmt: skip
    except Exception as exc:
        if "model version source" not in str(exc).lower():
            raise
    log.info("the registry refuses %sfinal as a source (a local path); registering runs:/%s/final", output_uri, run_id)
    return client.create_model_version(name, f"runs:/{run_id}/final", run_id=run_id, tags=all_tags,
                                       description=description)  # fmt: skip


def champion(client: Any, name: str) -> Any | None:
    """The version the ``champion`` alias points at, or None (no alias, or no registered model yet)."""
    try:
        model = client.get_registered_model(name)
    except Exception as exc:
        if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (model.aliases or {}).get(CHAMPION_ALIAS)
    return client.get_model_version(name, str(version)) if version is not None else None


def make_champion(client: Any, name: str, version: str) -> None:
    client.set_registered_model_alias(name, CHAMPION_ALIAS, str(version))


def tag_version(client: Any, name: str, version: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
