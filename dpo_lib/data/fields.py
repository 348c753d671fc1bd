"""Field checks shared by every record format.

All formats word their problems the same way (``field 'chosen': must be a non-empty string``)
so the messages live here once instead of drifting apart between formats. The ``all_*`` and
``any_*`` functions answer the same questions for a batch of values in a few passes of
builtins, so a batch of good records costs little Python; they never explain, the
one-value checks do.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, filterfalse, starmap
from operator import and_, eq, not_
from typing import Any

from dpo_lib.data.issues import Issue

FIELDS = ("prompt", "chosen", "rejected")

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
"""Invisible characters that make two texts differ without reading differently: zero width
space, non-joiner and joiner, word joiner, and the byte order mark used as a zero width space."""
_DROP_ZERO_WIDTH = dict.fromkeys(map(ord, ZERO_WIDTH))
_PROBE = 64
_MISSING = object()


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


def is_usable_text(value: str) -> bool:
    """Whether ``value`` is text worth training on: not blank, and valid Unicode.

    Lone UTF-16 surrogates can come from JSON escapes such as ``"\\ud800"``; they are not valid
    Unicode, cannot be encoded as UTF-8 and make tokenizers fail much later, so catch them here.
    ASCII text cannot hold one, and Python knows whether a string is ASCII without reading it.
    """
    return bool(value) and not value.isspace() and (value.isascii() or _encodes(value))


def all_usable_texts(values: Sequence[Any]) -> bool:
    """Whether every value is a string that :func:`is_usable_text` accepts."""
    return (
        set(map(type, values)) == {str}
        and all(values)
        and not any(map(str.isspace, values))
        and all(map(_encodes, filterfalse(str.isascii, values)))
    )


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: str, location: str, field: str, problems: list[Issue]) -> str | None:
    """Return ``value`` if it is usable text (:func:`is_usable_text`), else record why not."""
    if is_usable_text(value):
        return value
    if not value or value.isspace():
        problems.append(Issue(location, field, "must be a non-empty string"))
    else:
        bad = next(i for i, char in enumerate(value) if "\ud800" <= char <= "\udfff")
        problems.append(Issue(location, field, f"invalid Unicode: unpaired surrogate at character {bad}"))
    return None


def string_field(record: Mapping[str, Any], name: str, location: str, problems: list[Issue]) -> str | None:
    """Return the required non-empty string field ``name`` of ``record``, or record the problem."""
    value = record.get(name, _MISSING)
    if isinstance(value, str):
        if value and not value.isspace() and (value.isascii() or _encodes(value)):  # is_usable_text, inlined
            return value
        return check_text(value, location, name, problems)
    if value is _MISSING:
        problems.append(Issue(location, name, "required field is missing"))
    else:
        hint = " (a list of messages? that is the conversational format)" if isinstance(value, list) else ""
        problems.append(Issue(location, name, f"must be a string, found {json_type(value)}{hint}"))
    return None


def check_different(chosen: Any, rejected: Any, location: str, problems: list[Issue]) -> bool:
    """Chosen and rejected must differ: an identical pair carries no preference signal.

    Texts (strings, or the contents of messages with the same roles) are compared as
    :func:`same_text` does: surrounding whitespace, Unicode normalisation and zero-width
    characters aside, none of which a reader sees.
    """
    if isinstance(chosen, str):
        same = same_text(chosen, rejected)
        exact = same and chosen.strip() == rejected.strip()
    else:
        exact = chosen == rejected
        same = exact or same_messages(chosen, rejected)
    if same:
        why = "they are identical" if exact else "they differ only in Unicode normalisation or zero-width characters"
        problems.append(Issue(location, "rejected", f"must differ from 'chosen' ({why})"))
    return not same


def any_same_texts(chosen: Sequence[str], rejected: Sequence[str]) -> bool:
    """Whether any ``chosen[i]`` and ``rejected[i]`` are the same text (:func:`same_text`)."""
    if any(map(eq, map(str.strip, chosen), map(str.strip, rejected))):
        return True
    both_ascii = map(and_, map(str.isascii, chosen), map(str.isascii, rejected))  # then unequal means different
    return any(starmap(same_text, compress(zip(chosen, rejected, strict=True), map(not_, both_ascii))))


def any_same_messages(chosen: Iterable[list[dict[str, str]]], rejected: Iterable[list[dict[str, str]]]) -> bool:
    """Whether any ``chosen[i]`` and ``rejected[i]`` are the same conversation (:func:`same_messages`)."""
    return any(starmap(same_messages, zip(chosen, rejected, strict=True)))


def same_messages(chosen: list[dict[str, str]], rejected: list[dict[str, str]]) -> bool:
    """Whether two conversations have the same roles and the same texts (:func:`same_text`)."""
    if len(chosen) != len(rejected):
        return False
    for a, b in zip(chosen, rejected, strict=True):
        if a["role"] != b["role"] or not same_text(a["content"], b["content"]):
            return False
    return True


def same_text(a: str, b: str) -> bool:
    """Whether two texts read the same: equal once surrounding whitespace and zero-width characters
    (:data:`ZERO_WIDTH`) are removed and both are in Unicode normal form C (so ``"é"`` written as
    one character or as ``"e"`` and a combining accent compare equal). Compatibility forms stay
    apart: ``"x²"`` is not ``"x2"``, nor a full-width letter its ASCII one."""
    a, b = a.strip(), b.strip()
    if a == b:
        return True
    if (a.isascii() and b.isascii()) or _differ_in_ascii(a, b):
        return False  # the cheap answer for almost every pair; the rest costs a pass over both texts
    return _canonical(a) == _canonical(b)


def _canonical(text: str) -> str:
    if any(char in text for char in ZERO_WIDTH):
        text = text.translate(_DROP_ZERO_WIDTH)
    return unicodedata.normalize("NFC", text).strip()


def _differ_in_ascii(a: str, b: str) -> bool:
    """A cheap proof that two stripped texts stay different once canonical: they differ within an
    all-ASCII start or end. Removing zero-width characters leaves ASCII alone, and so does
    normalisation, except that an ASCII letter may combine with an accent right after it."""
    head_a, head_b = a[:_PROBE], b[:_PROBE]
    if head_a.isascii() and head_b.isascii():
        common = min(len(head_a), len(head_b)) - 1  # the last one may combine with what follows
        if head_a[:common] != head_b[:common]:
            return True
    tail_a, tail_b = a[-_PROBE:], b[-_PROBE:]
    if tail_a.isascii() and tail_b.isascii():
        common = min(len(tail_a), len(tail_b))
        if tail_a[len(tail_a) - common :] != tail_b[len(tail_b) - common :]:
            return True
    return False
