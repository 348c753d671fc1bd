"""Tokenization and collation of preference pairs (dpo_lib/data/tokenize.py).

Truncation is pinned down with a word-level stub tokenizer whose ids can be read off the
text (``p3`` -> 103, ``c3`` -> 203, ``r3`` -> 303); masking, EOS and the chat template go
through the real tiny tokenizer.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.tokenize import IGNORE_INDEX, TokenizedPair, collate_pairs, render_pair, tokenize_pair

BOS, EOS, PAD = 1, 2, 0


class WordTokenizer:
    """``"p0 p1 c5"`` -> ``[100, 101, 205]``; the prefix letter picks the hundred."""

    bos_token_id, eos_token_id, pad_token_id = BOS, EOS, PAD
    chat_template = None
    _base = {"p": 100, "c": 200, "r": 300}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        assert add_special_tokens is False, "tokenize_pair adds BOS/EOS itself"
        return {"input_ids": [self._base[w[0]] + int(w[1:]) for w in text.split()]}


def words(prefix: str, n: int, start: int = 0) -> str:
    return " ".join(f"{prefix}{i}" for i in range(start, start + n))


def ids(prefix: str, n: int, start: int = 0) -> list[int]:
    return [WordTokenizer._base[prefix] + i for i in range(start, start + n)]


def tokenize(pair: PreferencePair, tokenizer: Any = None, **kwargs: Any) -> TokenizedPair:
    return tokenize_pair(pair, tokenizer or WordTokenizer(), **kwargs)


# ---- plain text, BOS/EOS ------------------------------------------------------------------------


def test_prompt_gets_bos_and_completions_get_eos_when_nothing_is_truncated():
    pair = PreferencePair(words("p", 3), words("c", 2), words("r", 4))
    out = tokenize(pair, max_length=100, max_prompt_length=50)
    assert out.prompt_ids == [BOS, *ids("p", 3)]
    assert out.chosen_ids == [*ids("c", 2), EOS]
    assert out.rejected_ids == [*ids("r", 4), EOS]
    assert out.num_tokens == 2 * 4 + 3 + 5


def test_long_prompt_is_kept_whole_when_the_pair_fits_in_max_length():
    # prompt 1+6 tokens > max_prompt_length, but 7 + (3+1) <= 12: no truncation at all
    pair = PreferencePair(words("p", 6), words("c", 3), words("r", 3))
    out = tokenize(pair, max_length=12, max_prompt_length=4)
    assert out.prompt_ids == [BOS, *ids("p", 6)]
    assert out.chosen_ids == [*ids("c", 3), EOS]


def test_keep_end_truncation_keeps_the_last_max_prompt_length_prompt_tokens():
    pair = PreferencePair(words("p", 10), words("c", 6), words("r", 2))
    out = tokenize(pair, max_length=12, max_prompt_length=4, truncation_mode="keep_end")
    assert out.prompt_ids == ids("p", 4, start=6)  # p6..p9: the end of the prompt stays
    assert out.chosen_ids == [*ids("c", 6), EOS]  # room 8 >= 7: completions untouched
    assert out.rejected_ids == [*ids("r", 2), EOS]


def test_keep_start_truncation_keeps_the_first_max_prompt_length_prompt_tokens():
    pair = PreferencePair(words("p", 10), words("c", 6), words("r", 2))
    out = tokenize(pair, max_length=12, max_prompt_length=4, truncation_mode="keep_start")
    assert out.prompt_ids == [BOS, *ids("p", 3)]
    assert out.chosen_ids == [*ids("c", 6), EOS]


@pytest.mark.parametrize("mode", ["keep_end", "keep_start"])
def test_completions_are_cut_to_the_room_left_by_the_prompt_keeping_their_start(mode):
    pair = PreferencePair(words("p", 10), words("c", 20), words("r", 9))
    out = tokenize(pair, max_length=12, max_prompt_length=4, truncation_mode=mode)
    assert len(out.prompt_ids) == 4
    assert out.chosen_ids == ids("c", 8)  # cut: no EOS
    assert out.rejected_ids == ids("r", 8)  # 9 + EOS = 10 > 8: cut too
    assert len(out.prompt_ids) + len(out.chosen_ids) == 12


def test_short_completion_keeps_its_eos_when_the_other_one_is_cut():
    pair = PreferencePair(words("p", 2), words("c", 30), words("r", 3))
    out = tokenize(pair, max_length=10, max_prompt_length=5)
    assert out.prompt_ids == [BOS, *ids("p", 2)]
    assert out.chosen_ids == ids("c", 7)
    assert out.rejected_ids == [*ids("r", 3), EOS]


def test_unknown_truncation_mode_is_refused():
    pair = PreferencePair(words("p", 10), words("c", 20), words("r", 2))
    with pytest.raises(ValueError, match="truncation_mode"):
        tokenize(pair, max_length=12, max_prompt_length=4, truncation_mode="middle")


def test_real_tokenizer_adds_bos_and_eos_around_the_text(tiny_tokenizer):
    pair = PreferencePair("Tell me about the lamp.", " The lamp is helpful.", " The lamp is rude.")
    out = tokenize(pair, tiny_tokenizer, max_length=128, max_prompt_length=64)
    encode = lambda text: tiny_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert out.prompt_ids == [tiny_tokenizer.bos_token_id, *encode(pair.prompt)]
    assert out.chosen_ids == [*encode(pair.chosen), tiny_tokenizer.eos_token_id]
    assert out.rejected_ids == [*encode(pair.rejected), tiny_tokenizer.eos_token_id]
    assert tiny_tokenizer.decode(out.chosen_ids, skip_special_tokens=True) == pair.chosen


# ---- collation ----------------------------------------------------------------------------------


def test_collate_orders_rows_chosen_first_then_rejected():
    a = TokenizedPair([BOS, 100], [200, EOS], [300, EOS])
    b = TokenizedPair([BOS, 101], [201, EOS], [301, EOS])
    batch = collate_pairs([a, b], pad_token_id=PAD)
    assert batch["input_ids"].tolist() == [
        [BOS, 100, 200, EOS],
        [BOS, 101, 201, EOS],
        [BOS, 100, 300, EOS],
        [BOS, 101, 301, EOS],
    ]


def test_collate_masks_prompt_and_padding_in_labels_and_keeps_completion_tokens():
    a = TokenizedPair([BOS, 100, 101], [200, EOS], [300, 301, 302, EOS])
    b = TokenizedPair([BOS], [201, 202, EOS], [EOS])
    batch = collate_pairs([a, b], pad_token_id=PAD)
    x = IGNORE_INDEX
    assert batch["input_ids"].tolist() == [
        [BOS, 100, 101, 200, EOS, PAD, PAD],
        [BOS, 201, 202, EOS, PAD, PAD, PAD],
        [BOS, 100, 101, 300, 301, 302, EOS],
        [BOS, EOS, PAD, PAD, PAD, PAD, PAD],
    ]
    assert batch["labels"].tolist() == [
        [x, x, x, 200, EOS, x, x],
        [x, 201, 202, EOS, x, x, x],
        [x, x, x, 300, 301, 302, EOS],
        [x, EOS, x, x, x, x, x],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 0, 0, 0, 0, 0],
    ]
    assert batch["num_tokens"] == 5 + 4 + 7 + 2 == a.num_tokens + b.num_tokens
    assert batch["input_ids"].dtype == batch["labels"].dtype == torch.long


def test_collate_pads_with_the_given_pad_id_not_a_real_token():
    a = TokenizedPair([BOS], [200, 201, EOS], [300, EOS])
    batch = collate_pairs([a], pad_token_id=7)
    assert batch["input_ids"][1].tolist() == [BOS, 300, EOS, 7]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, 300, EOS, IGNORE_INDEX]


# ---- conversational -----------------------------------------------------------------------------

CONVERSATION = PreferencePair(
    prompt=[
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Tell me about the lamp."},
    ],
    chosen=[{"role": "assistant", "content": "The lamp is helpful and clear."}],
    rejected=[{"role": "assistant", "content": "The lamp is rude."}],
)


def test_conversational_pair_is_rendered_through_the_chat_template_with_prompt_as_prefix(tiny_tokenizer):
    prompt, chosen, rejected = render_pair(CONVERSATION, tiny_tokenizer)
    full_chosen = tiny_tokenizer.apply_chat_template(CONVERSATION.prompt + CONVERSATION.chosen, tokenize=False)
    assert prompt == tiny_tokenizer.apply_chat_template(CONVERSATION.prompt, tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")  # the generation prompt opens the assistant turn
    assert prompt + chosen == full_chosen
    assert chosen == "The lamp is helpful and clear.<|eos|>\n"
    assert rejected == "The lamp is rude.<|eos|>\n"


def test_conversational_pair_tokens_come_from_the_template_without_extra_bos_or_eos(tiny_tokenizer):
    out = tokenize(CONVERSATION, tiny_tokenizer, max_length=256, max_prompt_length=128)
    prompt, chosen, _ = render_pair(CONVERSATION, tiny_tokenizer)
    encode = lambda text: tiny_tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert out.prompt_ids == encode(prompt)
    assert out.prompt_ids[0] != tiny_tokenizer.bos_token_id
    assert out.chosen_ids == encode(chosen)
    # the template closes the turn with EOS itself (then a newline); no second EOS is appended
    assert out.chosen_ids.count(tiny_tokenizer.eos_token_id) == 1
    assert tiny_tokenizer.decode(out.prompt_ids + out.chosen_ids) == prompt + chosen


def test_conversational_pair_needs_a_chat_template():
    with pytest.raises(ValueError, match="chat template"):
        render_pair(CONVERSATION, WordTokenizer())
