"""Compose a :class:`~dpo_lib.spec.TrainConfig` from ``configs/`` presets and overrides.

Hydra composes the presets the run chooses (``model=tiny``, ``loss=dpo``, ``trainer=fsdp``,
``datasets=[toy]``); every other override (``lr=1e-4``, ``loss.beta=0.2``) is a value, set on the
composed config as data, and the result is validated by the contract. Overrides tune values inside
the chosen presets: they never choose a preset (``loss.name``) or reach Hydra's own keys.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dpo_lib.settings import config_dir as default_config_dir
from dpo_lib.spec import GROUPS, SpecError, TrainConfig, problems


class ConfigError(SpecError):
    """A config that cannot be composed or does not match the contract; names each key and reason."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems, title="invalid config")


CHOSEN_BY_PRESET = {f"{group}.name" for group in ("model", "loss", "trainer", "adapter")}
# Hydra keeps its state in a process-wide singleton (GlobalHydra): two compositions at once (the webhook
# resolves requests in the api-server's thread pool) fail with "GlobalHydra is already initialized".
_HYDRA = threading.Lock()


def compose_config(overrides: Sequence[str] = (), config_dir: Path | None = None) -> TrainConfig:
    """The training config for command-line overrides in Hydra's grammar.

    ``model=tiny datasets=[toy] loss=ipo exp_name=x lr=1e-4 loss.beta=0.2``: the group choices
    select presets; the rest are values (``null``, numbers, quoted strings, lists as Hydra parses them).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError([("(command line)", str(exc).splitlines()[0])]) from None
    groups, values = [], {}
    for override, text in zip(parsed, overrides, strict=True):
        key = override.key_or_group
        if override.is_delete() or override.package is not None:
            raise ConfigError([(key, "only key=value overrides are supported here")])
        if key in GROUPS and not override.is_add():
            groups.append(text)
        else:
            values[key] = override.value()
    return build_config(groups, values, config_dir=config_dir)


def build_config(
    groups: Sequence[str],
    values: Mapping[str, Any] | None = None,
    *,
    config_dir: Path | None = None,
    field_prefix: str = "",
) -> TrainConfig:
    """Compose the presets ``groups`` (``["model=tiny", ...]``), set ``values`` (dotted keys), validate.

    Errors name the key; with ``field_prefix`` (``"overrides"``), a value's key is named as the
    caller wrote it (``overrides.loss.beta``).
    """
    composed = compose_presets(groups, config_dir)
    values = dict(values or {})
    refused = [(key, why) for key in values if (why := _refusal(key))]
    if refused:
        raise ConfigError([(_joined(field_prefix, key), why) for key, why in sorted(refused)])
    for key, value in values.items():
        set_dotted(composed, key, value)
    try:
        return TrainConfig.model_validate(composed)
    except ValidationError as exc:
        found = problems(exc)
        if field_prefix:
            found = [
                (_joined(field_prefix, key) if (key := _value_key(f, values)) else f, reason) for f, reason in found
            ]
        raise ConfigError(found) from None


def compose_presets(groups: Sequence[str], config_dir: Path | None = None) -> dict[str, Any]:
    """Hydra's composition of ``configs/config.yaml`` with the chosen presets, as plain data."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    directory = Path(config_dir or default_config_dir()).resolve()
    try:
        with _HYDRA, initialize_config_dir(config_dir=str(directory), version_base=None):
            cfg = compose(config_name="config", overrides=list(groups))
        composed = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError([_explain_compose_error(exc, directory)]) from None
    assert isinstance(composed, dict)
    return composed


def set_dotted(target: dict[str, Any], key: str, value: Any) -> None:
    """``target["a"]["b"] = value`` for ``key="a.b"``, creating the dicts between."""
    *parents, leaf = key.split(".")
    for part in parents:
        child = target.get(part)
        if not isinstance(child, dict):
            child = target[part] = {}
        target = child
    target[leaf] = value


def _refusal(key: str) -> str | None:
    root = key.split(".")[0]
    if root == "hydra":
        return "Hydra's own settings cannot be set here"
    if key in CHOSEN_BY_PRESET:
        group = key.split(".")[0]
        return f"the {group} preset is chosen by {group}=..., not by its name; overrides tune values inside it"
    if key in GROUPS:
        return f"choose the {key} preset with {key}=<name>"
    return None


def _value_key(field: str, values: Mapping[str, Any]) -> str | None:
    """The key of ``values`` a problem at ``field`` comes from: the key itself, a field inside its value, or the
    field its key reaches into (``lr.x`` sets ``lr`` to a mapping, refused at ``lr``); None: not from a value."""
    if field in values:
        return field
    return next((key for key in values if field.startswith(key + ".") or key.startswith(field + ".")), None)


def _joined(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _explain_compose_error(exc: Exception, config_dir: Path) -> tuple[str, str]:
    from dpo_lib.spec import config_options

    text = str(exc).split("Config search path:")[0]  # Hydra's search-path dump is noise to users
    if missing := re.search(r"Could not (?:find|load) '(\w+)/([^']*)'", text):
        group, name = missing.groups()
        options = ", ".join(config_options(group, config_dir))
        return group, f"{name!r} is not a configs/{group}/ preset; choose one of {options}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    return getattr(exc, "full_key", None) or "(config)", "; ".join(lines) or type(exc).__name__
