"""Conversational records: lists of ``{"role", "content"}`` messages.

Two shapes are accepted, both as TRL reads them: an explicit prompt (``prompt``, ``chosen``,
``rejected``), or an implicit one (``chosen`` and ``rejected`` whose shared leading messages are
the prompt). Messages are normalised to exactly ``{"role", "content"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain
from operator import eq, itemgetter
from typing import Any

from dpo_lib.data.fields import (
    FIELDS,
    all_usable_texts,
    any_same_messages,
    check_different,
    check_text,
    is_usable_text,
    json_type,
)
from dpo_lib.data.issues import Issue
from dpo_lib.data.pair import Message, PreferencePair

ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
_ROLE, _CONTENT = itemgetter("role"), itemgetter("content")
_PROMPT_CHOSEN_REJECTED = itemgetter(*FIELDS)
_ROLE_LIST = ", ".join(sorted(ROLES))


def parse_messages(record: Mapping[str, Any], field: str, location: str, problems: list[Issue]) -> list[Message] | None:
    """Return the normalised message list in ``record[field]``, or append its problems."""
    value = record.get(field)
    if isinstance(value, list) and value:
        for message in value:  # the common case, checked inline: messages that need nothing done
            if not isinstance(message, dict) or len(message) != 2:
                break
            role, content = message.get("role"), message.get("content")
            if not (
                isinstance(role, str)
                and role in ROLES
                and isinstance(content, str)
                and content
                and not content.isspace()
                and (content.isascii() or is_usable_text(content))
            ):
                break
        else:
            return value
    return _normalised_messages(record, field, location, problems)


def _normalised_messages(
    record: Mapping[str, Any], field: str, location: str, problems: list[Issue]
) -> list[Message] | None:
    """parse_messages for the rest: messages with more keys than role and content, or problems."""
    if field not in record:
        problems.append(Issue(location, field, "required field is missing"))
        return None
    value = record[field]
    if not isinstance(value, list):
        problems.append(
            Issue(location, field, f"must be a list of {{role, content}} messages, found {json_type(value)}")
        )
        return None
    if not value:
        problems.append(Issue(location, field, "must be a non-empty list of messages"))
        return None
    before = len(problems)
    for i, message in enumerate(value):
        _message_problems(message, f"{field}[{i}]", location, problems)
    return None if len(problems) > before else [{"role": m["role"], "content": m["content"]} for m in value]


def _message_problems(message: Any, where: str, location: str, problems: list[Issue]) -> None:
    """Append what is wrong with one message, if anything (``where`` names it: ``chosen[2]``)."""
    if not isinstance(message, dict):
        problems.append(
            Issue(location, where, f"must be an object with 'role' and 'content', found {json_type(message)}")
        )
        return
    role = message.get("role")
    if "role" not in message:
        problems.append(Issue(location, f"{where}.role", "required field is missing"))
    elif not isinstance(role, str) or role not in ROLES:
        shown = repr(role)[:40] if isinstance(role, str) else json_type(role)
        problems.append(Issue(location, f"{where}.role", f"must be one of {_ROLE_LIST}, found {shown}"))
    content = message.get("content")
    if "content" not in message:
        problems.append(Issue(location, f"{where}.content", "required field is missing"))
    elif not isinstance(content, str):
        problems.append(Issue(location, f"{where}.content", f"must be a string, found {json_type(content)}"))
    else:
        check_text(content, location, f"{where}.content", problems)


def shared_prefix_length(chosen: list[Message], rejected: list[Message]) -> int:
    """How many leading messages the two conversations have in common."""
    length = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        length += 1
    return length


def parse_conversational_record(
    record: Mapping[str, Any], location: str, problems: list[Issue]
) -> PreferencePair | None:
    """Turn a conversational record (either shape) into a PreferencePair, or append its problems."""
    explicit = "prompt" in record
    prompt = parse_messages(record, "prompt", location, problems) if explicit else None
    chosen = parse_messages(record, "chosen", location, problems)
    rejected = parse_messages(record, "rejected", location, problems)
    if chosen is None or rejected is None or (explicit and prompt is None):
        return None
    if not check_different(chosen, rejected, location, problems):
        return None
    if prompt is not None:
        return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected)
    return _split_implicit(chosen, rejected, location, problems)


def parse_conversational_records(records: Sequence[Mapping[str, Any]]) -> list[PreferencePair] | None:
    """The pairs of explicit-prompt records of ``{role, content}`` messages, if
    :func:`parse_conversational_record` finds nothing wrong in any (and nothing to normalise)."""
    try:
        prompts, chosen, rejected = zip(*map(_PROMPT_CHOSEN_REJECTED, records), strict=True)
    except KeyError:  # an implicit prompt, or a missing field
        return None
    conversations = prompts + chosen + rejected
    if set(map(type, conversations)) != {list} or not all(conversations):
        return None
    messages = list(chain.from_iterable(conversations))
    if set(map(type, messages)) != {dict} or set(map(len, messages)) != {2}:
        return None
    try:
        roles, contents = set(map(_ROLE, messages)), list(map(_CONTENT, messages))
    except (KeyError, TypeError):  # a key other than role and content, or a role that cannot be hashed
        return None
    if not roles <= ROLES or not all_usable_texts(contents):
        return None
    if any(map(eq, chosen, rejected)) or any_same_messages(chosen, rejected):
        return None
    return list(map(PreferencePair, prompts, chosen, rejected))


def _split_implicit(
    chosen: list[Message], rejected: list[Message], location: str, problems: list[Issue]
) -> PreferencePair | None:
    before = len(problems)
    shared = shared_prefix_length(chosen, rejected)
    if shared == 0:
        problems.append(
            Issue(
                location,
                "rejected",
                "shares no leading messages with 'chosen', so there is no prompt "
                "(without a 'prompt' field the shared start of both conversations is the prompt)",
            )
        )
        return None
    for name, messages in (("chosen", chosen), ("rejected", rejected)):
        if len(messages) == shared:
            problems.append(Issue(location, name, "has no reply after the messages shared with the other side"))
        elif messages[shared]["role"] != "assistant":
            problems.append(
                Issue(
                    location,
                    f"{name}[{shared}]",
                    f"the conversations diverge at a '{messages[shared]['role']}' message; "
                    "only the final assistant reply may differ",
                )
            )
    if len(problems) > before:
        return None
    return PreferencePair(prompt=chosen[:shared], chosen=chosen[shared:], rejected=rejected[shared:])
