"""LoRA adapters (peft) on the policy: added, switched off to serve as the reference, merged for saving.

With ``adapter: lora`` the policy is the base causal LM with low-rank adapters on its target
linear layers (peft's ``get_peft_model``). The base is frozen, and held in bf16 when training in
bf16; the adapters are the only trainable weights, fp32 as master weights should be. The
reference is the same model with its adapters switched off (:class:`AdaptersOff`), so the base
weights are in memory once. ``final/`` holds peft's adapter folder, or with ``merge: true`` the
base with ``W + (alpha / r)·B·A`` in place of each adapted ``W`` (:func:`merged_state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpo_lib.spec import LoRAConfig
from dpo_lib.training.logps import PairLogps, SequenceLogpModel

ADAPTER = "default"  # peft's name for a model's one adapter
PEFT_PREFIX = "base_model.model."  # what peft puts before the causal LM's own parameter names
ADAPTER_CONFIG_FILE = "adapter_config.json"  # marks an adapter folder (peft's save_pretrained)


def add_lora(causal_lm: torch.nn.Module, config: LoRAConfig) -> Any:
    """``causal_lm`` frozen, with new LoRA adapters on ``config.target_modules``: a peft model.

    peft keeps the adapters in fp32 over a bf16 base (``autocast_adapter_dtype``). Raises
    ValueError naming the modules when a target is missing or is not a linear layer.
    """
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(causal_lm, lora)
    _check_linear_only(model)
    return model


def load_lora(causal_lm: torch.nn.Module, adapter_dir: str | Path) -> Any:
    """``causal_lm`` with the adapters saved in ``adapter_dir`` (an adapter run's final/), frozen."""
    from peft import PeftModel

    return PeftModel.from_pretrained(causal_lm, str(adapter_dir), is_trainable=False)


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG_FILE).exists()


def _check_linear_only(model: Any) -> None:
    from peft.tuners.lora import Linear, LoraLayer

    others = sorted(name for name, module in model.named_modules()
                    if isinstance(module, LoraLayer) and not isinstance(module, Linear))  # fmt: skip
    if others:
        raise ValueError(f"adapters go on linear layers only; not on {', '.join(others[:5])}")


class AdaptersOff(torch.nn.Module):
    """The reference of an adapter run: the policy itself with its adapters switched off.

    Each call runs the policy's base in eval mode (as a separately loaded reference runs) inside
    peft's ``disable_adapter()``, then leaves the policy's mode and adapters as they were. Its
    own ``train()``/``eval()`` reach no further: the policy's mode is the training loop's.
    """

    def __init__(self, policy: SequenceLogpModel) -> None:
        super().__init__()
        self.policy = policy

    def train(self, mode: bool = True) -> AdaptersOff:
        self.training = mode
        return self

    def forward(self, batch: dict[str, Any]) -> PairLogps:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.causal_lm.disable_adapter():
                return self.policy(batch)
        finally:
            self.policy.train(was_training)


def merged_state_dict(state: Mapping[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A peft model's state dict as its base model's, each adapted weight ``W + scaling·B·A``.

    ``state`` is named as a peft model names it (``base_model.model.<name>``, adapted layers'
    weights under ``.base_layer``, adapters under ``.lora_A.default``/``.lora_B.default``). The sum
    is taken in fp32 and stored in the base weight's dtype. Tensors shared in ``state`` (tied
    embeddings) stay shared.
    """
    merged = {}
    for key, value in state.items():
        name = key.removeprefix(PEFT_PREFIX)
        if ".lora_A." in name or ".lora_B." in name:
            continue
        if name.endswith(".base_layer.weight"):
            layer = key.removesuffix(".base_layer.weight")
            a, b = state[f"{layer}.lora_A.{ADAPTER}.weight"], state[f"{layer}.lora_B.{ADAPTER}.weight"]
            delta = (b.float() @ a.float()) * scaling
            value = (value.float() + delta.to(value.device)).to(value.dtype)
        merged[name.replace(".base_layer.", ".")] = value
    return merged


def save_merged(peft_model: Any, directory: Path, config: LoRAConfig,
                state_dict: Mapping[str, torch.Tensor] | None = None) -> None:  # fmt: skip
    """The base model with the adapters merged in, as ``save_pretrained`` writes a full model.

    ``state_dict``: the peft model's full state (gathered from shards); None reads the model's own.
    The model itself is left as it was (peft's ``merge_and_unload`` would change it in place).
    """
    state = state_dict if state_dict is not None else peft_model.state_dict()
    merged = merged_state_dict(state, config.alpha / config.r)
    peft_model.get_base_model().save_pretrained(directory, state_dict=merged, safe_serialization=True)
