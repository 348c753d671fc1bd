"""Training configuration: compose ``configs/`` with key=value overrides, then validate.

Composition is Hydra's compose API (config groups ``model/``, ``loss/``, ``trainer/``,
``datasets/`` and the root ``config.yaml``); validation is JSON Schema
(``configs/schemas/``). Both run before any model is loaded, and every failure
becomes a :class:`ConfigError` that names the key and the reason.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(os.environ.get("DPO_CONFIG_DIR", Path(__file__).resolve().parent.parent / "configs"))
SCHEMA_DIR = CONFIG_DIR / "schemas"


class ConfigError(ValueError):
    """A config that cannot be composed or does not match its schema."""


def compose_config(overrides: Sequence[str] = (), config_dir: Path = CONFIG_DIR) -> dict[str, Any]:
    """Compose the root config with ``overrides`` and return it resolved and validated.

    Overrides use Hydra's grammar: ``model=tiny``, ``datasets=[toy]``, ``lr=1e-4``,
    ``loss.beta=0.2``, ``+new_key=1``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(Path(config_dir).resolve()), version_base=None):
            cfg = compose(config_name="config", overrides=list(overrides))
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_explain_compose_error(exc)) from None
    validate_config(resolved)
    return resolved


def _explain_compose_error(exc: Exception) -> str:
    key = getattr(exc, "full_key", None)
    cause = exc.__cause__
    if type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError") and getattr(cause, "full_key", None):
        # An override of a key the config does not have. Hydra suggests ``+key=value``, but the
        # schema refuses unknown keys anyway, so the useful hint is the spelling.
        return f"{cause.full_key}: not a config key (check the spelling; configs/config.yaml lists the keys)"
    text = str(exc).split("Config search path:")[0]  # Hydra's search-path dump is noise to users
    head, _, options = text.partition("Available options in")
    lines = [line.strip() for line in head.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    message = "; ".join(lines) or type(exc).__name__
    if options:
        group, _, names = options.partition(":")
        message += f" (available {group.strip()} options: {', '.join(names.split())})"
    if type(exc).__name__ == "MissingMandatoryValue" and key:
        return f"{key}: a value is required (pass {key}=...)"
    return f"{key}: {message}" if key else message


def validate_config(cfg: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` listing every schema violation, each as ``key.path: reason``."""
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("invalid config:\n" + "\n".join(f"  {_describe(e)}" for e in errors))
    if not_finite := sorted(_non_finite(cfg)):  # JSON Schema's bounds let NaN through (every comparison is false)
        raise ConfigError(
            "invalid config:\n" + "\n".join(f"  {key}: {value} is not a finite number" for key, value in not_finite)
        )
    if cfg["max_prompt_length"] >= cfg["max_length"]:
        raise ConfigError(
            f"max_prompt_length: {cfg['max_prompt_length']} must be smaller than "
            f"max_length ({cfg['max_length']}) to leave room for the completion"
        )


def _non_finite(value: Any, path: str = "") -> list[tuple[str, float]]:
    if isinstance(value, float):
        return [] if math.isfinite(value) else [(path or "(root)", value)]
    if isinstance(value, dict):
        return [
            item for key, child in value.items() for item in _non_finite(child, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(value, list):
        return [item for i, child in enumerate(value) for item in _non_finite(child, f"{path}.{i}")]
    return []


def _describe(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "(root)"
    if error.validator == "additionalProperties":
        return f"{path}: {error.message} (check the spelling of the key)"
    if error.validator == "pattern" and "description" in error.schema:
        return f"{path}: {error.instance!r} is not allowed: {error.schema['description']}"
    return f"{path}: {error.message}"


@lru_cache(maxsize=1)
def _validator() -> Any:
    return schema_validator("config.schema.json")


def schema_validator(name: str, schema_dir: Path = SCHEMA_DIR) -> Any:
    """A jsonschema validator for ``configs/schemas/<name>``, resolving ``$ref`` between schema files."""
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {p.name: json.loads(p.read_text()) for p in Path(schema_dir).glob("*.schema.json")}
    registry = Registry().with_resources(
        (schema_name, Resource.from_contents(schema)) for schema_name, schema in schemas.items()
    )
    return Draft202012Validator(schemas[name], registry=registry)
