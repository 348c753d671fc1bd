"""Preference data: formats, streaming validation, statistics, tokenization.

The main entry points are re-exported lazily, so ``import dpo_lib.data`` stays cheap (DAG
files import it while Airflow parses them) and pulls in ijson/numpy only on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "open_dataset": "dpo_lib.data.dataset",
    "DatasetError": "dpo_lib.data.interface",
    "PreferenceDatasetInterface": "dpo_lib.data.interface",
    "PreferencePair": "dpo_lib.data.pair",
    "ValidationReport": "dpo_lib.data.validation",
    "Issue": "dpo_lib.data.issues",
    "DatasetStats": "dpo_lib.data.stats",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
