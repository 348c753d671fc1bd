"""The DAG's Params, one per field of :class:`~dpo_lib.spec.FinetuneRequest`: type, bounds, choices,
default and description all come from the contract, so the trigger form says what the request says.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk import Param

from dpo_lib.spec import FinetuneRequest, request_schema

FORM_KEYS = ("type", "enum", "minLength", "maxLength", "pattern", "maxProperties", "propertyNames",
             "additionalProperties", "description", "title")  # fmt: skip


def request_params(defaults: Mapping[str, Any] | None = None, *, config_dir: Path | None = None) -> dict[str, Param]:
    """A Param per request field; ``defaults`` replaces some defaults and is checked here, so a bad one
    (say, from the nightly DAG's settings) is an import error naming the field, not a failed run."""
    request = FinetuneRequest.parse(dict(defaults or {}), config_dir=config_dir)
    schema = request_schema(config_dir)
    return {
        name: Param(getattr(request, name), **{k: v for k, v in field.items() if k in FORM_KEYS})
        for name, field in schema["properties"].items()
    }
