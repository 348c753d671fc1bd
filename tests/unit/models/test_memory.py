"""The training memory estimate (dpo_lib/models/memory.py): parameter counts from the meta device checked
against real models and published figures, and the per-part arithmetic on the Llama-3-8B shape."""

import pytest

from dpo_lib.config import build_config
from dpo_lib.models.memory import GIB, estimate_training_memory, model_shape

# Meta-Llama-3-8B(-Instruct)'s config.json as published; 8,030,261,248 parameters.
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128009, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 8192,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.40.0.dev0",
    "use_cache": True, "vocab_size": 128256,
}  # fmt: skip
# Qwen2.5-0.5B-Instruct's: tied embeddings, biased q/k/v; 494,032,768 parameters.
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "intermediate_size": 4864,
    "max_position_embeddings": 32768, "model_type": "qwen2", "num_attention_heads": 14,
    "num_hidden_layers": 24, "num_key_value_heads": 2, "rope_theta": 1000000.0, "tie_word_embeddings": True,
    "vocab_size": 151936,
}  # fmt: skip


def config(adapter="none", **values):
    values = {"exp_name": "x", "batch_size": 2, "max_length": 1024, "max_prompt_length": 512, **values}
    return build_config(["model=tiny", f"adapter={adapter}"], values)


@pytest.fixture(scope="module")
def llama3_8b():
    return model_shape(LLAMA3_8B)


def test_the_meta_device_counts_what_a_real_model_and_peft_count(tiny_model_dir):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = model_shape(json.loads((tiny_model_dir / "config.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert shape.parameters == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    assert shape.lora_parameters(8, "all-linear") == trainable
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert shape.lora_parameters(4, ["q_proj", "v_proj"]) == peft_model.get_nb_trainable_parameters()[0]


def test_published_parameter_counts(llama3_8b):
    assert llama3_8b.parameters == 8_030_261_248
    assert model_shape(QWEN25_05B).parameters == 494_032_768
    # LoRA r=16 on every linear layer of Llama-3-8B: peft reports 41,943,040 trainable parameters.
    assert llama3_8b.lora_parameters(16, "all-linear") == 41_943_040


def test_full_fine_tuning_of_the_8b_shape(llama3_8b):
    estimate = estimate_training_memory(llama3_8b, config())
    parts = {name: size / GIB for name, size in estimate.parts.items()}
    assert parts["weights, gradients and AdamW states"] == pytest.approx(119.66, abs=0.01)  # 16 bytes a parameter
    assert parts["reference"] == pytest.approx(14.96, abs=0.01)  # 8B in bf16: about 15 GiB
    # 2 pairs × 2 sequences × 1024 tokens × 32 layers × (24 × 4096 + 9 × 14336) bytes
    assert parts["activations"] == pytest.approx(27.75, abs=0.01)
    assert parts["output head"] == pytest.approx(1024 * 128256 * 8 / GIB)
    assert 170 < estimate.total / GIB < 176
    assert estimate.describe().startswith("≈ 173 GiB per GPU for full fine-tuning of 8.03B parameters")


def test_lora_on_the_8b_shape_holds_the_base_once_in_bf16(llama3_8b):
    estimate = estimate_training_memory(llama3_8b, config("lora"))
    assert estimate.trainable == 41_943_040 and "reference" not in estimate.parts
    assert estimate.parts["frozen base"] / GIB == pytest.approx(14.96, abs=0.01)
    assert estimate.parts["adapters, gradients and AdamW states"] == 16 * 41_943_040
    assert 44 < estimate.total / GIB < 50


def test_what_changes_the_estimate(llama3_8b):
    base = estimate_training_memory(llama3_8b, config())
    sharded = estimate_training_memory(llama3_8b, config(), shards=8)
    assert (
        sharded.parts["weights, gradients and AdamW states"] == base.parts["weights, gradients and AdamW states"] // 8
    )
    assert sharded.parts["activations"] == base.parts["activations"]  # each GPU runs its own micro-batch
    checkpointed = estimate_training_memory(llama3_8b, config(**{"trainer.activation_checkpointing": True}))
    assert checkpointed.parts["activations"] < base.parts["activations"] / 5
    no_reference = estimate_training_memory(llama3_8b, config(**{"trainer.precompute_ref_logps": True}))
    assert "reference" not in no_reference.parts
    fp32 = estimate_training_memory(llama3_8b, config(), bf16=False)
    assert fp32.parts["reference"] == 2 * base.parts["reference"]
    assert fp32.parts["activations"] == 2 * base.parts["activations"]
