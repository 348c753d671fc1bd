"""Anthropic HH records: two full dialogues, ``chosen`` and ``rejected``, sharing a prompt.

Each dialogue reads ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``. The prompt is everything up
to and including the last ``"\\n\\nAssistant:"`` of the chosen dialogue and the completions
are what follows it in each dialogue (the leading space included, as the HH data has it).
If the rejected dialogue does not start with that same prompt, the record compares answers
to different conversations, which DPO cannot use: that is an error for the record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dpo_lib.data.fields import check_different, check_text, string_field
from dpo_lib.data.issues import Issue
from dpo_lib.data.pair import PreferencePair

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_SHOWN = "'\\n\\nAssistant:'"  # the marker as messages print it, on one line


def looks_like_hh(record: Mapping[str, Any]) -> bool:
    """True for a record shaped like HH: no ``prompt`` and a dialogue string in ``chosen``."""
    chosen = record.get("chosen")
    return "prompt" not in record and isinstance(chosen, str) and (ASSISTANT in chosen or HUMAN in chosen)


def split_prompt(chosen: str) -> tuple[str, str] | None:
    """Split a dialogue into (prompt through the last Assistant marker, completion); None if unmarked."""
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        return None
    cut += len(ASSISTANT)
    return chosen[:cut], chosen[cut:]


def parse_hh_record(record: Mapping[str, Any], location: str, problems: list[Issue]) -> PreferencePair | None:
    """Turn an HH record into a text PreferencePair, or append its problems and return None."""
    chosen = string_field(record, "chosen", location, problems)
    rejected = string_field(record, "rejected", location, problems)
    if chosen is None or rejected is None:
        return None
    split = split_prompt(chosen)
    if split is None:
        problems.append(Issue(location, "chosen", f"has no {_SHOWN} turn, so no prompt can be split off"))
        return None
    prompt, chosen_reply = split
    if not rejected.startswith(prompt):
        problems.append(
            Issue(
                location,
                "rejected",
                f"does not share the chosen dialogue's prompt (everything up to its last {_SHOWN})",
            )
        )
        return None
    rejected_reply = rejected[len(prompt) :]
    before = len(problems)
    for name, reply in (("chosen", chosen_reply), ("rejected", rejected_reply)):
        if not reply or reply.isspace():
            problems.append(Issue(location, name, f"has no reply after the last {_SHOWN}"))
        else:
            check_text(reply, location, name, problems)
    if len(problems) > before or not check_different(chosen_reply, rejected_reply, location, problems):
        return None
    return PreferencePair(prompt=prompt, chosen=chosen_reply, rejected=rejected_reply)
