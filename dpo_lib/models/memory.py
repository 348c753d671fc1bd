"""How much GPU memory training a model takes, from its config.json alone, before anything is downloaded.

accelerate builds the model on the meta device to count its parameters and linear layers; the estimate
adds what the trainer holds (weights, gradients, AdamW states, the reference, activations, the CUDA
context), divided over the GPUs with FSDP or tensor parallel (docs/configuration.md#models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dpo_lib.spec import TrainConfig

GIB = 1 << 30
BYTES_PER_TRAINED_PARAMETER = 16  # fp32 weight, fp32 gradient, AdamW exp_avg and exp_avg_sq (fp32)
OVERHEAD_BYTES, OVERHEAD_SHARE = GIB, 0.05


@dataclass(frozen=True)
class Linear:
    """One linear layer of the decoder: its module name and its input and output sizes."""

    name: str
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a model: sizes and the linear layers LoRA may adapt."""

    model_type: str
    parameters: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    linears: tuple[Linear, ...]  # without the output head

    def lora_parameters(self, r: int, target_modules: str | Iterable[str]) -> int:
        """Parameters of rank-``r`` adapters (A: r × in, B: out × r) on the targets, as peft chooses them:
        ``all-linear`` is every linear layer but the output head; names match a module's last parts."""
        if target_modules == "all-linear":
            chosen = self.linears
        else:
            names = list(target_modules)
            chosen = tuple(m for m in self.linears if any(m.name == n or m.name.endswith("." + n) for n in names))
        return sum(r * (m.in_features + m.out_features) for m in chosen)


def model_shape(config_json: Mapping[str, Any]) -> ModelShape:
    """The shape of the causal LM that ``config_json`` (a model's config.json, parsed) describes.

    Built on the meta device: no memory is allocated, so an 8B config takes a second.
    Raises ValueError for an architecture this transformers does not know.
    """
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    values = dict(config_json)
    model_type = values.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ValueError("config.json has no model_type")
    config = AutoConfig.for_model(model_type, **values)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # on the meta device from_config leaves tied embeddings as two tensors
    head = model.get_output_embeddings()
    linears = tuple(
        Linear(name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    )
    text = config.get_text_config()
    return ModelShape(
        model_type=model_type,
        parameters=sum(p.numel() for p in model.parameters()),  # tied weights count once
        hidden_size=text.hidden_size,
        intermediate_size=getattr(text, "intermediate_size", None) or 4 * text.hidden_size,
        num_layers=text.num_hidden_layers,
        vocab_size=text.vocab_size,
        linears=linears,
    )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one GPU holds at the peak of a training step, by part."""

    parameters: int
    trainable: int
    adapter: str  # "none" or "lora"
    shards: int  # GPUs the weights and their states are divided over
    parts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        """``≈ 161 GiB per GPU for full fine-tuning of 8.03B parameters (weights, gradients and ...)``."""
        what = (
            f"full fine-tuning of {_count(self.parameters)} parameters"
            if self.adapter == "none"
            else f"{self.adapter} adapters ({_count(self.trainable)} parameters) on {_count(self.parameters)}"
        )
        parts = ", ".join(f"{name} {gib(size)}" for name, size in self.parts.items())
        sharded = f" with the weights sharded over {self.shards} GPUs" if self.shards > 1 else ""
        return f"≈ {gib(self.total)} per GPU for {what}{sharded} ({parts})"


def estimate_training_memory(shape: ModelShape, config: TrainConfig, *, shards: int = 1, bf16: bool = True):
    """The peak memory of one GPU training ``shape`` as ``config`` says (see the module's docstring).

    ``shards``: the GPUs FSDP or tensor parallel divide the weights over (1: the basic trainer);
    ``bf16``: bf16 autocast (the default on a GPU), else fp32 throughout.
    """
    frozen_bytes = 2 if bf16 else 4  # a frozen copy is held in bf16 when training in bf16
    parts: dict[str, int] = {}
    if config.adapter.name == "lora":
        trainable = shape.lora_parameters(config.adapter.r, config.adapter.target_modules)
        parts["frozen base"] = frozen_bytes * shape.parameters // shards
        parts["adapters, gradients and AdamW states"] = BYTES_PER_TRAINED_PARAMETER * trainable // shards
    else:
        trainable = shape.parameters
        parts["weights, gradients and AdamW states"] = BYTES_PER_TRAINED_PARAMETER * trainable // shards
        needs_reference = config.loss.name not in ("sft", "reference_free")
        if needs_reference and not config.trainer.precompute_ref_logps:
            parts["reference"] = frozen_bytes * shape.parameters // shards
    parts["activations"] = activation_bytes(shape, config, bf16=bf16)
    parts["output head"] = head_bytes(shape, config)
    parts["CUDA context and allocator slack"] = OVERHEAD_BYTES + int(OVERHEAD_SHARE * sum(parts.values()))
    return MemoryEstimate(shape.parameters, trainable, config.adapter.name, shards, parts)


def tokens_per_step(config: TrainConfig) -> int:
    """Tokens of one micro-batch at most: each pair's chosen and rejected sequences, padded to max_length."""
    return config.batch_size * 2 * config.max_length


def activation_bytes(shape: ModelShape, config: TrainConfig, *, bf16: bool = True) -> int:
    """What backward needs kept from the forward of one micro-batch."""
    element = 2 if bf16 else 4
    per_token_layer = element * (12 * shape.hidden_size + 4.5 * shape.intermediate_size)
    tokens = tokens_per_step(config)
    if config.trainer.activation_checkpointing:  # each layer's input (the fp32 residual), one layer recomputed
        return int(tokens * (shape.num_layers * 4 * shape.hidden_size + per_token_layer))
    return int(tokens * shape.num_layers * per_token_layer)


def head_bytes(shape: ModelShape, config: TrainConfig) -> int:
    """The output head's fp32 logits and log-softmax, over one chunk of tokens (or all, without chunking)."""
    tokens = tokens_per_step(config)
    chunk = config.trainer.logp_chunk_size
    return min(tokens, chunk or tokens) * shape.vocab_size * 4 * 2


def gib(size: float) -> str:
    value = size / GIB
    return f"{value:.0f} GiB" if value >= 10 else f"{value:.1f} GiB"


def _count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.{2 if n < 100 * scale else 1}f}{unit}"
    return str(n)
