"""Summed completion log-probabilities, from one forward over every sequence of a batch.

A batch holds 2B sequences, ``[chosen_1..chosen_B, rejected_1..rejected_B]``, either
right-padded in 2B rows or packed into one row (``dpo_lib.data.tokenize``). Either way
each token carries the index of its sequence, so per-sequence sums are one
``index_add`` and the two layouts share all the code below.

The output head can run in chunks (:class:`ChunkedTokenLogps`): full-vocabulary fp32
logits for the whole batch are never materialised, which is most of the activation
memory of a small model with a large vocabulary.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch

from dpo_lib.data.tokenize import IGNORE_INDEX
from dpo_lib.training.attention import NAME as VARLEN
from dpo_lib.training.attention import packed_kwargs


class PairLogps(NamedTuple):
    chosen: torch.Tensor  # (B,) summed log-probs of the chosen completions
    rejected: torch.Tensor  # (B,)
    chosen_tokens: torch.Tensor  # (B,) completion tokens counted in ``chosen``
    rejected_tokens: torch.Tensor  # (B,)


def _matmul_dtype(tensor: torch.Tensor) -> torch.dtype:
    device_type = tensor.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return tensor.dtype


class ChunkedTokenLogps(torch.autograd.Function):
    """log p(target_n | hidden_n) = (h_n·W)[t_n] − logsumexp(h_n·W), ``chunk`` rows at a time.

    Forward keeps only the log-sum-exp per row; backward recomputes each chunk's logits,
    using d/dlogits = (onehot(t) − softmax) · grad. Rows whose target is IGNORE_INDEX give 0.
    A frozen head (an adapter run's) gets no weight gradient: that product is skipped.
    The matrix products run as they are; with ``compiled`` the element-wise work on each
    chunk's logits (casts, log-sum-exp, softmax gradient) is fused into a kernel or two
    instead of one pass over the (chunk × vocabulary) logits per operation.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int,
                compiled: bool = False):  # fmt: skip
        mm_dtype = _matmul_dtype(hidden)
        acc_dtype = torch.promote_types(mm_dtype, torch.float32)  # fp32 softmax statistics, at least
        valid = targets != IGNORE_INDEX
        safe = targets.masked_fill(~valid, 0)
        out = torch.zeros(hidden.shape[0], dtype=acc_dtype, device=hidden.device)
        lse = torch.empty_like(out)
        w = weight.to(mm_dtype)
        statistics = _compiled(_chunk_statistics) if compiled else _chunk_statistics
        for start in range(0, hidden.shape[0], chunk):
            end = start + chunk
            logits = hidden[start:end].to(mm_dtype) @ w.T
            lse[start:end], out[start:end] = statistics(logits, safe[start:end], valid[start:end], acc_dtype)
        ctx.save_for_backward(hidden, weight, safe, valid, lse)
        ctx.chunk, ctx.mm_dtype, ctx.acc_dtype, ctx.compiled = chunk, mm_dtype, acc_dtype, compiled
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):
        hidden, weight, safe, valid, lse = ctx.saved_tensors
        mm_dtype, acc_dtype, chunk = ctx.mm_dtype, ctx.acc_dtype, ctx.chunk
        w = weight.to(mm_dtype)
        grad_hidden = torch.empty_like(hidden)
        weight_needs_grad = ctx.needs_input_grad[1]
        grad_weight = torch.zeros(weight.shape, dtype=acc_dtype, device=weight.device) if weight_needs_grad else None
        scale = grad_out * valid
        logits_grad = _compiled(_chunk_logits_grad) if ctx.compiled else _chunk_logits_grad
        for start in range(0, hidden.shape[0], chunk):
            end = start + chunk
            h = hidden[start:end].to(mm_dtype)
            dlogits = logits_grad(h @ w.T, lse[start:end], scale[start:end], safe[start:end], mm_dtype)
            grad_hidden[start:end] = (dlogits @ w).to(hidden.dtype)
            if weight_needs_grad:
                grad_weight += (dlogits.T @ h).to(acc_dtype)
        return grad_hidden, grad_weight.to(weight.dtype) if weight_needs_grad else None, None, None, None


def _chunk_statistics(logits: torch.Tensor, safe: torch.Tensor, valid: torch.Tensor, acc_dtype: torch.dtype):
    """Per row of one chunk: logsumexp(logits) and the target's log-prob (0 where ignored)."""
    logits = logits.to(acc_dtype)
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, safe[:, None]).squeeze(1)
    return lse, (picked - lse) * valid


def _chunk_logits_grad(logits: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor, safe: torch.Tensor,
                       out_dtype: torch.dtype) -> torch.Tensor:  # fmt: skip
    """d/dlogits of Σ scale_n · log p(t_n) for one chunk: (onehot(t) − softmax) · scale."""
    dlogits = -torch.exp(logits.to(lse.dtype) - lse[:, None]) * scale[:, None]
    rows = torch.arange(logits.shape[0], device=logits.device)
    dlogits[rows, safe] += scale
    return dlogits.to(out_dtype)


@functools.cache
def _compiled(fn):
    # dynamic: the last chunk of a batch, and every batch's token count, differ in rows.
    return torch.compile(fn, dynamic=True)


def token_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int | None,
                compiled: bool = False) -> torch.Tensor:  # fmt: skip
    """Per-token target log-probs for flat ``hidden`` (N, H); 0 where the target is ignored."""
    if chunk:
        return ChunkedTokenLogps.apply(hidden, weight, targets, chunk, compiled)
    logits = torch.nn.functional.linear(hidden, weight)  # full (N, V) logits: the plain, memory-hungry path
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    valid = targets != IGNORE_INDEX
    picked = logits.gather(1, targets.masked_fill(~valid, 0)[:, None]).squeeze(1)
    return (picked - torch.logsumexp(logits, dim=-1)) * valid


def shift_targets(labels: torch.Tensor) -> torch.Tensor:
    """Position t predicts token t+1: the target of t is ``labels[t+1]`` (ignored at the end)."""
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


class SequenceLogpModel(torch.nn.Module):
    """A causal LM that returns summed log-probs per sequence instead of logits.

    All forward work happens inside this module's ``forward``, so a wrapper such as FSDP
    sees one root module whose parameters (embeddings, final norm, output head) it can
    gather around the call.
    """

    def __init__(self, causal_lm: torch.nn.Module, logp_chunk_size: int | None = None,
                 compile_head: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.causal_lm = causal_lm
        self.logp_chunk_size = logp_chunk_size
        self.compile_head = compile_head

    def forward(self, batch: dict[str, Any]) -> PairLogps:
        decoder = self.causal_lm.get_decoder()
        boundaries = packed_kwargs(batch) if self.causal_lm.config._attn_implementation == VARLEN else {}
        hidden = decoder(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
            **boundaries,
        ).last_hidden_state
        targets = shift_targets(batch["labels"])
        weight = self.causal_lm.get_output_embeddings().weight
        flat = token_logps(hidden.flatten(0, 1), weight, targets.flatten(), self.logp_chunk_size, self.compile_head)
        return sum_by_sequence(flat, targets.flatten(), batch["sequence_ids"].flatten(), batch["num_sequences"])


def sum_by_sequence(flat_logps: torch.Tensor, flat_targets: torch.Tensor, flat_sequence_ids: torch.Tensor,
                    num_sequences: int) -> PairLogps:  # fmt: skip
    """Per-sequence sums of token log-probs; the first half of the sequences are the chosen ones."""
    # A token's target belongs to the sequence of the *next* token, which is the token's own
    # sequence wherever the target is counted (prompts, never completions, start sequences).
    valid = flat_targets != IGNORE_INDEX
    seq = flat_sequence_ids.masked_fill(~valid, num_sequences)  # ignored tokens go to a dropped bucket
    sums = torch.zeros(num_sequences + 1, dtype=flat_logps.dtype, device=flat_logps.device)
    sums = sums.index_add(0, seq, flat_logps)
    counts = torch.zeros(num_sequences + 1, dtype=torch.long, device=seq.device).index_add(0, seq, valid.long())
    half = num_sequences // 2
    # Separate tensors, not views of one: FSDP hooks backward onto a module's outputs.
    chosen, rejected = sums[:half].clone(), sums[half:num_sequences].clone()
    return PairLogps(chosen, rejected, counts[:half].clone(), counts[half:num_sequences].clone())
