"""Pipeline settings with every folder under one test directory."""

from pathlib import Path
from typing import Any

from dpo_lib.settings import Settings


def settings_under(root: Path, **overrides: Any) -> Settings:
    """Workdir, storage root, staging and artifacts all inside ``root``; any field can be overridden."""
    fields = {
        "workdir": root,
        "local_storage_root": root,
        "staging_root": root / "staging",
        "artifacts_root": root / "artifacts",
        "runner": "local",
        "python": "/usr/bin/python3",
    }
    return Settings(**{**fields, **overrides})
