"""The record every dataset format is read into."""

from __future__ import annotations

from dataclasses import dataclass

Message = dict[str, str]  # {"role": ..., "content": ...}
Text = str | list[Message]


@dataclass(frozen=True)
class PreferencePair:
    """One preference: a prompt, the preferred completion and the other one.

    Plain-text formats hold strings. Conversational records hold lists of
    ``{role, content}`` messages; they are rendered through the tokenizer's
    chat template at tokenization time (``dpo_lib.data.tokenize``).
    """

    prompt: Text
    chosen: Text
    rejected: Text

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)
