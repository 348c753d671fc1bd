"""The dataset formats by name: which container each uses, how a record becomes a pair,
and how a format is recognised from a file's first record.

Formats differ only in how one record turns into a :class:`PreferencePair`; reading the
container (JSON array or JSON Lines) is shared (``records.py``). So a format is just a
name, an optional required container, a record parser, and optionally a batch parser: the
pairs of a batch of records when every one of them is valid, checked a field at a time
across the batch, or None, and then each record goes through the record parser, which
says what is wrong. Validation spends most of its time on valid records, so this is
where the pass is fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from dpo_lib.data.conversational import parse_conversational_record, parse_conversational_records
from dpo_lib.data.fields import FIELDS, all_usable_texts, any_same_texts, check_different, string_field
from dpo_lib.data.hh import looks_like_hh, parse_hh_record
from dpo_lib.data.issues import Issue
from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.records import ARRAY, LINES

JSON = "json"
"""A JSON array of ``{prompt, chosen, rejected}`` string records (the "novalto" format)."""
JSONL = "jsonl"
"""JSON Lines of the same string records."""
HH = "hh"
"""Anthropic HH transcripts, in a JSON array or JSON Lines."""
CONVERSATIONAL = "conversational"
"""Message-list records, in a JSON array or JSON Lines."""

FORMATS = (JSON, JSONL, HH, CONVERSATIONAL)

RecordParser = Callable[[Mapping[str, Any], str, list[Issue]], "PreferencePair | None"]
BatchParser = Callable[[Sequence[Mapping[str, Any]]], "list[PreferencePair] | None"]

_PROMPT_CHOSEN_REJECTED = itemgetter(*FIELDS)


def parse_text_record(record: Mapping[str, Any], location: str, problems: list[Issue]) -> PreferencePair | None:
    """Turn a ``{prompt, chosen, rejected}`` string record into a pair, or append its problems."""
    prompt = string_field(record, "prompt", location, problems)
    chosen = string_field(record, "chosen", location, problems)
    rejected = string_field(record, "rejected", location, problems)
    if prompt is None or chosen is None or rejected is None:
        return None
    if not check_different(chosen, rejected, location, problems):
        return None
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)


def parse_text_records(records: Sequence[Mapping[str, Any]]) -> list[PreferencePair] | None:
    """The pairs of string records, if :func:`parse_text_record` finds nothing wrong in any."""
    try:
        prompts, chosen, rejected = zip(*map(_PROMPT_CHOSEN_REJECTED, records), strict=True)
    except KeyError:
        return None
    if not all_usable_texts(prompts + chosen + rejected) or any_same_texts(chosen, rejected):
        return None
    return list(map(PreferencePair, prompts, chosen, rejected))


_PARSERS: dict[str, RecordParser] = {
    JSON: parse_text_record,
    JSONL: parse_text_record,
    HH: parse_hh_record,
    CONVERSATIONAL: parse_conversational_record,
}


_BATCH_PARSERS: dict[str, BatchParser] = {
    JSON: parse_text_records,
    JSONL: parse_text_records,
    CONVERSATIONAL: parse_conversational_records,
}


def check_format_name(name: str | None) -> None:
    """Raise ValueError for a format name that is not one of :data:`FORMATS` (None means detect)."""
    if name is not None and name not in _PARSERS:
        raise ValueError(f"unknown dataset format {name!r}; expected one of: {', '.join(FORMATS)}")


def required_container(name: str | None) -> str | None:
    """The container a format insists on (``json`` arrays, ``jsonl`` lines), else None."""
    return {JSON: ARRAY, JSONL: LINES}.get(name or "")


def parser_for(name: str) -> RecordParser:
    check_format_name(name)
    return _PARSERS[name]


def batch_parser_for(name: str) -> BatchParser | None:
    """The format's batch parser, if it has one (see the module docstring)."""
    check_format_name(name)
    return _BATCH_PARSERS.get(name)


def detect_format(record: Mapping[str, Any], container: str | None) -> str:
    """Recognise the format from the first record object of a file.

    Any of prompt/chosen/rejected holding a list means messages (conversational); no prompt
    and an HH dialogue in ``chosen`` means HH; anything else is read as plain string
    records, whose checks then say precisely what is missing.
    """
    if any(isinstance(record.get(name), list) for name in FIELDS):
        return CONVERSATIONAL
    if looks_like_hh(record):
        return HH
    return JSONL if container == LINES else JSON


def default_format(container: str | None) -> str | None:
    """The format to report when no record said more: the plain format of the container."""
    return {ARRAY: JSON, LINES: JSONL}.get(container or "")
