"""Field checks shared by every record format.

All formats word their problems the same way (``field 'chosen': must be a non-empty string``)
so the messages live here once instead of drifting apart between formats.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from dpo_lib.data.issues import Issue

FIELDS = ("prompt", "chosen", "rejected")

# Lone UTF-16 surrogates can come from JSON escapes such as "\ud800"; they are not valid
# Unicode, cannot be encoded as UTF-8 and make tokenizers fail much later, so catch them here.
_SURROGATE = re.compile("[\ud800-\udfff]")


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages such as ``found number``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_text(value: str, location: str, field: str, problems: list[Issue]) -> str | None:
    """Return ``value`` if it is usable text (not blank, valid Unicode), else record why not."""
    if not value or value.isspace():
        problems.append(Issue(location, field, "must be a non-empty string"))
        return None
    bad = _SURROGATE.search(value)
    if bad is not None:
        problems.append(Issue(location, field, f"invalid Unicode: unpaired surrogate at character {bad.start()}"))
        return None
    return value


def string_field(record: Mapping[str, Any], name: str, location: str, problems: list[Issue]) -> str | None:
    """Return the required non-empty string field ``name`` of ``record``, or record the problem."""
    if name not in record:
        problems.append(Issue(location, name, "required field is missing"))
        return None
    value = record[name]
    if not isinstance(value, str):
        hint = " (a list of messages? that is the conversational format)" if isinstance(value, list) else ""
        problems.append(Issue(location, name, f"must be a string, found {json_type(value)}{hint}"))
        return None
    return check_text(value, location, name, problems)


def check_different(chosen: Any, rejected: Any, location: str, problems: list[Issue]) -> bool:
    """Chosen and rejected must differ: an identical pair carries no preference signal.

    Strings are compared ignoring surrounding whitespace, which no tokenizer would keep
    meaningful either.
    """
    same = chosen.strip() == rejected.strip() if isinstance(chosen, str) else chosen == rejected
    if same:
        problems.append(Issue(location, "rejected", "must differ from 'chosen' (they are identical)"))
    return not same
