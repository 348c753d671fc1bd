"""Tokenization and collation of preference pairs for DPO.

Each pair becomes prompt + chosen and prompt + rejected. Labels are ``IGNORE_INDEX`` on prompt and
padding tokens, so only the completions count in the loss. A pair longer than ``max_length`` is
truncated by ``truncation_mode`` (docs/configuration.md); the completion ends with the EOS token
unless truncation cut it off.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from dpo_lib.data.pair import PreferencePair

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: int = 0  # tokens cut off (prompt and both completions) to fit max_length
    prompt_truncated: int = 0  # of which from the prompt

    @property
    def num_tokens(self) -> int:
        """Real tokens of both sequences, prompts included (the throughput unit)."""
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)


def render_pair(pair: PreferencePair, tokenizer: Any) -> tuple[str, str, str]:
    """Text of prompt, chosen and rejected; messages go through the tokenizer's chat template."""
    if not pair.is_conversational:
        return pair.prompt, pair.chosen, pair.rejected
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("conversational data needs a tokenizer with a chat template")
    prompt = tokenizer.apply_chat_template(pair.prompt, tokenize=False, add_generation_prompt=True)
    completions = []
    for reply in (pair.chosen, pair.rejected):
        full = tokenizer.apply_chat_template(pair.prompt + reply, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the prompt as a prefix of the conversation")
        completions.append(full[len(prompt) :])
    return prompt, completions[0], completions[1]


def tokenize_pair(
    pair: PreferencePair,
    tokenizer: Any,
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str = "keep_end",
) -> TokenizedPair:
    prompt_ids, chosen_ids, rejected_ids = encode_pair(pair, tokenizer)
    return truncate_pair(prompt_ids, chosen_ids, rejected_ids, max_length=max_length,
                         max_prompt_length=max_prompt_length, truncation_mode=truncation_mode)  # fmt: skip


def encode_pair(pair: PreferencePair, tokenizer: Any) -> tuple[list[int], list[int], list[int]]:
    """Token ids of prompt (after BOS), chosen and rejected (each closed by EOS), before any truncation."""
    prompt, chosen, rejected = render_pair(pair, tokenizer)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and not pair.is_conversational:
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    eos = [] if pair.is_conversational else [tokenizer.eos_token_id]  # chat templates close turns themselves
    chosen_ids = tokenizer(chosen, add_special_tokens=False)["input_ids"] + eos
    rejected_ids = tokenizer(rejected, add_special_tokens=False)["input_ids"] + eos
    return prompt_ids, chosen_ids, rejected_ids


def truncate_pair(
    prompt_ids: list[int],
    chosen_ids: list[int],
    rejected_ids: list[int],
    *,
    max_length: int,
    max_prompt_length: int,
    truncation_mode: str = "keep_end",
) -> TokenizedPair:
    """The truncation rule of the module docstring, applied to a pair's token ids."""
    truncated = prompt_truncated = 0
    if len(prompt_ids) + max(len(chosen_ids), len(rejected_ids)) > max_length:
        before = len(prompt_ids) + len(chosen_ids) + len(rejected_ids)
        prompt_before = len(prompt_ids)
        if truncation_mode == "keep_end":
            prompt_ids = prompt_ids[-max_prompt_length:]
        elif truncation_mode == "keep_start":
            prompt_ids = prompt_ids[:max_prompt_length]
        else:
            raise ValueError(f"truncation_mode must be keep_end or keep_start, not {truncation_mode!r}")
        room = max_length - len(prompt_ids)
        chosen_ids, rejected_ids = chosen_ids[:room], rejected_ids[:room]
        truncated = before - len(prompt_ids) - len(chosen_ids) - len(rejected_ids)
        prompt_truncated = prompt_before - len(prompt_ids)
    return TokenizedPair(prompt_ids, chosen_ids, rejected_ids, truncated, prompt_truncated)


def _sequences(pairs: list[TokenizedPair]) -> list[tuple[list[int], int]]:
    """``(token ids, prompt length)`` of ``[chosen_1..chosen_B, rejected_1..rejected_B]``."""
    chosen = [(p.prompt_ids + p.chosen_ids, len(p.prompt_ids)) for p in pairs]
    rejected = [(p.prompt_ids + p.rejected_ids, len(p.prompt_ids)) for p in pairs]
    return chosen + rejected


def length_bound(length: int) -> int:
    """The next power of two (at least 128): a bound on sequence lengths that takes few distinct values."""
    return max(128, 1 << (length - 1).bit_length())


def longest_sequence(pairs: list[TokenizedPair]) -> int:
    """Tokens in the longest chosen or rejected sequence (prompt included) of ``pairs``."""
    return max(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) for p in pairs)


def collate_pairs(pairs: list[TokenizedPair], pad_token_id: int) -> dict[str, Any]:
    """Right-padded tensors for one forward over ``[chosen_1..chosen_B, rejected_1..rejected_B]``.

    Returns ``input_ids``, ``attention_mask``, ``labels`` and ``sequence_ids`` (the row of
    each token) of shape ``(2B, T)``, ``num_sequences`` (2B) and ``num_tokens`` (real tokens).
    """
    import torch

    sequences = _sequences(pairs)
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE_INDEX, dtype=torch.long)
    for i, (row, prompt_len) in enumerate(sequences):
        ids = torch.tensor(row, dtype=torch.long)
        input_ids[i, : len(row)] = ids
        attention_mask[i, : len(row)] = 1
        labels[i, prompt_len : len(row)] = ids[prompt_len:]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": labels,
        "sequence_ids": torch.arange(len(sequences)).unsqueeze(1).expand(-1, width),
        "num_sequences": len(sequences),
        "num_tokens": int(attention_mask.sum()),
    }


def pack_pairs(
    pairs: list[TokenizedPair], pad_token_id: int, pad_to_multiple_of: int = 64, max_seq_len: int | None = None
) -> dict[str, Any]:
    """All 2B sequences back to back in one row: no padding between them, so no wasted compute.

    ``position_ids`` restart at 0 for each sequence; that is how the model's attention keeps
    sequences from seeing each other (Hugging Face models build a block-diagonal causal mask
    from it when no attention mask is passed). The row is padded at the end to a multiple of
    ``pad_to_multiple_of`` so compiled kernels see few distinct shapes.

    For varlen attention the batch also carries ``cu_seq_lens``, where each sequence starts
    (2B + 2 entries: the tail padding is one more sequence, possibly empty, so the shape never
    changes), and ``max_seq_len``, a bound on their lengths: pass the dataset's (see
    :func:`longest_sequence`) so that it too is the same in every batch, else the next power
    of two of this batch's. Values that change between batches would recompile compiled code.
    """
    import torch

    sequences = _sequences(pairs)
    total = sum(len(ids) for ids, _ in sequences)
    width = -(-total // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((1, width), pad_token_id, dtype=torch.long)
    labels = torch.full((1, width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((1, width), dtype=torch.long)
    sequence_ids = torch.full((1, width), len(sequences), dtype=torch.long)
    at = 0
    for i, (row, prompt_len) in enumerate(sequences):
        n = len(row)
        ids = torch.tensor(row, dtype=torch.long)
        input_ids[0, at : at + n] = ids
        labels[0, at + prompt_len : at + n] = ids[prompt_len:]
        position_ids[0, at : at + n] = torch.arange(n)
        sequence_ids[0, at : at + n] = i
        at += n
    position_ids[0, at:] = torch.arange(width - at)  # the tail padding is one more (ignored) sequence
    lengths = [len(ids) for ids, _ in sequences] + [width - total]
    cu_seq_lens = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32)
    longest = max(max(lengths), max_seq_len or 0)
    return {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "labels": labels,
        "sequence_ids": sequence_ids,
        "num_sequences": len(sequences),
        "num_tokens": total,
        "cu_seq_lens": cu_seq_lens,
        "max_seq_len": longest if max_seq_len else length_bound(longest),
    }
