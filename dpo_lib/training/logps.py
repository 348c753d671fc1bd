"""Summed log-probabilities of completions, from one forward over chosen and rejected rows."""

from __future__ import annotations

from typing import NamedTuple

import torch

from dpo_lib.data.tokenize import IGNORE_INDEX


class PairLogps(NamedTuple):
    chosen: torch.Tensor  # (B,) summed log-probs of the chosen completions
    rejected: torch.Tensor  # (B,)
    chosen_tokens: torch.Tensor  # (B,) completion tokens counted in ``chosen``
    rejected_tokens: torch.Tensor  # (B,)


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of log p(label_t | tokens_<t) over positions whose label is not IGNORE_INDEX.

    Computed as ``logit[label] − logsumexp(logits)`` in fp32, which never builds a second
    full-vocabulary tensor the way ``log_softmax`` then ``gather`` would.
    Returns the sums and the number of counted tokens, both shaped ``(rows,)``.
    """
    logits = logits[:, :-1, :]
    labels = labels[:, 1:]
    mask = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~mask, 0)
    picked = torch.gather(logits, 2, safe_labels.unsqueeze(-1)).squeeze(-1).float()
    token_logps = picked - torch.logsumexp(logits.float(), dim=-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def concatenated_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> PairLogps:
    """One forward over the ``(2B, T)`` batch from ``collate_pairs``; rows ``[:B]`` are chosen."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    logps, counts = sequence_logps(logits, batch["labels"])
    half = logps.shape[0] // 2
    return PairLogps(logps[:half], logps[half:], counts[:half], counts[half:])
