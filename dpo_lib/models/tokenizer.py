"""The run's tokenizer, loaded the one way train, validate and stage load it (transformers imported on call)."""

from __future__ import annotations

from typing import Any

from dpo_lib.spec import ModelConfig


def load_tokenizer(model: ModelConfig) -> Any:
    """``AutoTokenizer`` of ``model.tokenizer_name_or_path`` (else the model's folder); EOS pads when nothing else does."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_name_or_path or model.name_or_path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
