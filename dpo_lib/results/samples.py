"""``run_dir/samples.json``: a few held-out prompts with the reference's, the champion's and the new policy's
greedy continuations side by side, for the run report::

    [{"prompt": "...", "reference": "...", "champion": "..." | null, "policy": "..."}, ...]

``champion`` is null when there is no champion to compare with; a model whose generation fails gets
null too (a warning says why): samples illustrate, they never fail the run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from dpo_lib.data.tokenize import TokenizedPair

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.json"
N_SAMPLES, MAX_NEW_TOKENS = 4, 48


def side_by_side(
    tokenizer: Any,
    pairs: Sequence[TokenizedPair],
    models: dict[str, torch.nn.Module | None],
    device: torch.device,
    *,
    n: int = N_SAMPLES,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[dict[str, str | None]]:
    """One row per prompt of the first ``n`` pairs: the prompt, and each model's greedy continuation
    (``models``: column name -> model, None for a column with no model)."""
    prompts = [pair.prompt_ids for pair in pairs[:n]]
    rows: list[dict[str, str | None]] = [{"prompt": tokenizer.decode(ids, skip_special_tokens=True)} for ids in prompts]
    for name, model in models.items():
        texts: list[str | None] = [None] * len(prompts)
        if model is not None:
            try:
                texts = [greedy(model, ids, tokenizer, device, max_new_tokens) for ids in prompts]
            except Exception as exc:
                log.warning("samples: %s could not generate (%s); its column is null", name, exc)
        for row, text in zip(rows, texts, strict=True):
            row[name] = text
    return rows


@torch.no_grad()
def greedy(model: torch.nn.Module, prompt_ids: Sequence[int], tokenizer: Any, device: torch.device,
           max_new_tokens: int) -> str:  # fmt: skip
    """``model``'s greedy continuation of one prompt (a :class:`SequenceLogpModel`, or the reference of an adapter
    run: the policy with its adapters off)."""
    with _causal_lm(model) as causal_lm, _plain_attention(causal_lm):
        input_ids = torch.tensor([list(prompt_ids)], device=device)
        output = causal_lm.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)


@contextlib.contextmanager
def _causal_lm(model: torch.nn.Module) -> Iterator[Any]:
    from dpo_lib.training.adapters import AdaptersOff

    if isinstance(model, AdaptersOff):
        causal_lm = model.policy.causal_lm
        with causal_lm.disable_adapter():
            yield causal_lm
    else:
        yield model.causal_lm


@contextlib.contextmanager
def _plain_attention(causal_lm: Any) -> Iterator[None]:
    """SDPA while generating: the packed-sequence kernels (varlen) need the trainer's packed batches."""
    config = causal_lm.config
    before = getattr(config, "_attn_implementation", None)
    if before in (None, "sdpa", "eager"):
        yield
        return
    causal_lm.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        causal_lm.set_attn_implementation(before)
