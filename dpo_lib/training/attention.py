"""``varlen`` attention: packed sequences attend within themselves, given their boundaries, not a mask.

The packer's sequence boundaries (``cu_seq_lens``) go straight to PyTorch's FlashAttention
(``torch.nn.attention.varlen.varlen_attn``) on CUDA; elsewhere exact SDPA runs with the equivalent
block-diagonal causal mask. It is registered with transformers' attention interface under
:data:`NAME`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

NAME = "varlen"


try:
    from torch.nn.attention.varlen import varlen_attn  # PyTorch 2.10 and later
except ImportError:
    varlen_attn = None

# How this PyTorch's varlen_attn spells "causal", and whether it takes fewer key/value heads
# than query heads; read once here, outside any compiled code.
_PARAMETERS = inspect.signature(varlen_attn).parameters if varlen_attn else {}
_CAUSAL = {"window_size": (-1, 0)} if "window_size" in _PARAMETERS else {"is_causal": True}
_TAKES_GQA = "enable_gqa" in _PARAMETERS
_FLASH_DTYPES = (torch.float16, torch.bfloat16)


def available_on_gpu() -> bool:
    """Whether this PyTorch has the FlashAttention varlen kernel."""
    return varlen_attn is not None


def register() -> None:
    """Make ``attn_implementation="varlen"`` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)


def packed_kwargs(batch: dict[str, Any]) -> dict[str, Any]:
    """The model-call keyword arguments that carry a packed batch's sequence boundaries."""
    return {
        "cu_seq_lens_q": batch["cu_seq_lens"],
        "cu_seq_lens_k": batch["cu_seq_lens"],
        "max_length_q": batch["max_seq_len"],
        "max_length_k": batch["max_seq_len"],
    }


def varlen_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention of one packed row; ``query`` is (1, H, T, D), ``key``/``value`` (1, H_kv, T, D).

    Returns (1, T, H, D), the layout transformers' attention functions return.
    """
    cu_seq_lens = kwargs.get("cu_seq_lens_q")
    if cu_seq_lens is None or query.shape[0] != 1:
        raise ValueError("varlen attention runs on packed batches only (trainer.packing: true)")
    if dropout and module.training:
        raise ValueError("varlen attention does not implement attention dropout")
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (T, heads, D)
    half = _half_dtype(q)
    if q.is_cuda and varlen_attn is not None and half is not None:
        # max_length_q stays as given (a symbolic int under torch.compile): int() would pin the
        # compiled layer to one value and recompile it for every other.
        out = _flash_varlen(*(t.to(half) for t in (q, k, v)), cu_seq_lens, kwargs["max_length_q"], scaling)
    else:
        out = _masked_sdpa(q, k, v, cu_seq_lens, scaling)
    return out.unsqueeze(0), None


def _half_dtype(tensor: torch.Tensor) -> torch.dtype | None:
    """The 16-bit type FlashAttention should run in: the tensor's own, or autocast's (like SDPA under autocast)."""
    if tensor.dtype in _FLASH_DTYPES:
        return tensor.dtype
    if torch.is_autocast_enabled(tensor.device.type):
        dtype = torch.get_autocast_dtype(tensor.device.type)
        return dtype if dtype in _FLASH_DTYPES else None
    return None  # fp32 without autocast: the exact masked path, not a silent downcast


def _flash_varlen(q, k, v, cu_seq_lens, max_len: int, scale: float | None) -> torch.Tensor:
    cu = cu_seq_lens.to(torch.int32)
    grouped = k.shape[1] != q.shape[1]
    if grouped and not _TAKES_GQA:
        repeat = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    extra = {"enable_gqa": True} if grouped and _TAKES_GQA else {}
    return varlen_attn(q, k, v, cu, cu, max_len, max_len, scale=scale, **_CAUSAL, **extra)


def _masked_sdpa(q, k, v, cu_seq_lens, scale: float | None) -> torch.Tensor:
    position = torch.arange(q.shape[0], device=q.device)
    sequence = torch.searchsorted(cu_seq_lens[1:].long(), position, right=True)  # empty sequences included
    mask = (sequence[:, None] == sequence[None, :]) & (position[:, None] >= position[None, :])
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=scale,
        enable_gqa=k.shape[1] != q.shape[1],
    )  # fmt: skip
    return out.transpose(0, 1)
