"""The adapter contract and the pieces of LoRA training that need no training run: the merge, the
trainable-only checkpoint file, the frozen output head, the model card (dpo_lib/training/adapters.py,
checkpoint.py, logps.py, model_card.py; the adapter parts of spec.py and plan.py)."""

from __future__ import annotations

import re

import pytest
import torch

from dpo_lib.config import ConfigError, compose_config
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.spec import FinetuneRequest, LoRAConfig, NoAdapterConfig, SpecError
from dpo_lib.training import checkpoint, model_card
from dpo_lib.training.adapters import add_lora, merged_state_dict
from dpo_lib.training.logps import token_logps
from tests.support.settings_under import settings_under

# ---- the contract --------------------------------------------------------------------------------


def test_adapter_is_a_config_group_defaulting_to_none():
    assert compose_config(["exp_name=x"]).adapter == NoAdapterConfig()
    lora = compose_config(["exp_name=x", "adapter=lora", "adapter.r=4", "adapter.target_modules=[q_proj,v_proj]"])
    assert lora.adapter == LoRAConfig(r=4, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"], merge=False)
    assert compose_config(["exp_name=x", "adapter=lora"]).adapter.target_modules == "all-linear"


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        (["adapter=lora", "adapter.r=0"], "adapter.r", "greater than or equal to 1"),
        (["adapter=lora", "adapter.dropout=1.0"], "adapter.dropout", "less than 1"),
        (["adapter=none", "adapter.r=8"], "adapter.r", "not a field of the none adapter"),
        (["adapter.name=lora"], "adapter.name", "chosen by adapter=..."),
        (["adapter=qlora"], "adapter", "'qlora' is not a configs/adapter/ preset"),
    ],
)
def test_bad_adapter_settings_are_refused_naming_the_key(overrides, field, reason):
    with pytest.raises(ConfigError) as info:
        compose_config(["exp_name=x", *overrides])
    assert any(f == field and reason in why for f, why in info.value.problems), info.value.problems


def test_tensor_parallel_refuses_adapters_at_validation_in_one_line_naming_both():
    with pytest.raises(ConfigError) as info:
        compose_config(["exp_name=x", "adapter=lora", "trainer=tensor_parallel"])
    ((field, reason),) = info.value.problems
    assert field == "adapter" and "\n" not in reason
    assert "adapter=lora" in reason and "trainer=tensor_parallel" in reason
    assert compose_config(["exp_name=x", "adapter=lora", "trainer=fsdp"]).adapter.name == "lora"


def test_the_request_chooses_an_adapter_preset_and_the_plan_composes_it(tmp_path):
    assert FinetuneRequest.parse({}).adapter == "none"
    with pytest.raises(SpecError, match="'qlora' is not a configs/adapter/ option; choose one of lora, none"):
        FinetuneRequest.parse({"adapter": "qlora"})
    settings = settings_under(tmp_path)
    conf = {"adapter": "lora", "overrides": {"adapter.r": 8, "adapter.merge": True}}
    spec = plan_run(conf, dag_id="dpo_finetune", run_id="r", settings=settings)
    assert spec.train.adapter == LoRAConfig(r=8, merge=True)
    with pytest.raises(SpecError) as info:
        plan_run({"adapter": "lora", "trainer": "tensor_parallel"}, dag_id="d", run_id="r", settings=settings)
    assert [field for field, _ in info.value.problems] == ["adapter"]


def test_the_json_schemas_know_the_adapter():
    import json

    import jsonschema

    from tests.conftest import REPO

    schemas = REPO / "configs" / "schemas"
    request = json.loads((schemas / "request.schema.json").read_text())
    assert request["properties"]["adapter"]["enum"] == ["lora", "none"]
    assert jsonschema.Draft202012Validator(request).is_valid({"adapter": "lora"})
    assert not jsonschema.Draft202012Validator(request).is_valid({"adapter": "qlora"})
    config = json.loads((schemas / "config.schema.json").read_text())
    for overrides in (["adapter=lora", "adapter.target_modules=[q_proj]", "trainer=fsdp"], ["adapter=none"]):
        jsonschema.validate(compose_config(["exp_name=x", *overrides]).model_dump(mode="json"), config)


# ---- merging, checkpoint files, the frozen head --------------------------------------------------


def small_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)  # fmt: skip
    return LlamaForCausalLM(config)


def lora_model(config: LoRAConfig, seed: int = 0):
    model = add_lora(small_llama(seed), config)
    torch.manual_seed(seed + 1)
    with torch.no_grad():  # B starts at 0 (adapters off); random B makes the merge mean something
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model


def test_merged_state_dict_matches_peft_merge_and_unload():
    config = LoRAConfig(r=4, alpha=8)
    model = lora_model(config)
    merged = merged_state_dict(model.state_dict(), config.alpha / config.r)
    expected = model.merge_and_unload().state_dict()
    assert merged.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(merged[key], expected[key], rtol=1e-6, atol=1e-6)
    changed = [key for key in expected if not torch.equal(expected[key], small_llama().state_dict()[key])]
    assert changed and all(re.search(r"(proj)\.weight$", key) for key in changed)
    # tied weights stay one storage, which save_pretrained writes once
    assert merged["lm_head.weight"].data_ptr() == merged["model.embed_tokens.weight"].data_ptr()


@pytest.mark.filterwarnings("ignore:Model has `tie_word_embeddings=True`")  # peft's, for the refused embed_tokens
def test_adapters_only_on_the_named_linear_layers_and_all_linear_leaves_the_head_alone():
    some = lora_model(LoRAConfig(target_modules=["q_proj", "v_proj"]))
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in some.named_parameters() if "lora_A" in name}
    assert adapted == {"q_proj", "v_proj"}
    every = lora_model(LoRAConfig())
    adapted = {name.split(".lora_A")[0].rsplit(".", 1)[-1] for name, _ in every.named_parameters() if "lora_A" in name}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    trainable = [name for name, param in every.named_parameters() if param.requires_grad]
    assert trainable and all(".lora_A." in name or ".lora_B." in name for name in trainable)
    with pytest.raises(ValueError, match="not_a_layer"):
        add_lora(small_llama(), LoRAConfig(target_modules=["not_a_layer"]))
    with pytest.raises(ValueError, match="linear layers only; not on .*embed_tokens"):
        add_lora(small_llama(), LoRAConfig(target_modules=["embed_tokens", "q_proj"]))


def test_a_trainable_only_checkpoint_holds_and_restores_the_adapters_alone(tmp_path):
    model = lora_model(LoRAConfig(r=2))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model(torch.randint(0, 40, (2, 5))).logits.sum().backward()
    optimizer.step()
    path = checkpoint.save_checkpoint(tmp_path, 1, model, optimizer, scheduler, {}, keep=1, trainable_only=True)
    from safetensors.torch import load_file

    saved = load_file(path / "model.safetensors")
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert set(saved) == trainable and len(saved) == 2 * 2 * 7  # A and B, 7 projections, 2 layers
    expected = {name: param.detach().clone() for name, param in model.named_parameters()}

    again = lora_model(LoRAConfig(r=2), seed=5)  # other adapters; the same base (small_llama(0) is seeded)
    again_optimizer = torch.optim.AdamW([p for p in again.parameters() if p.requires_grad], lr=0.1)
    checkpoint.load_checkpoint(path, again, again_optimizer, scheduler, trainable_only=True)
    for name, param in again.named_parameters():
        if param.requires_grad:
            assert torch.equal(param, expected[name]), name
    assert len(again_optimizer.state_dict()["state"]) == len(trainable)

    with pytest.raises(ValueError, match="does not hold this model's trainable weights"):
        checkpoint.load_trainable(lora_model(LoRAConfig(r=2, target_modules=["q_proj"])), path / "model.safetensors")


def test_a_frozen_output_head_costs_no_weight_gradient_and_gives_the_same_hidden_gradient():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    hidden = torch.randn(23, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 8, dtype=torch.float64)
    targets = torch.randint(0, 30, (23,))
    token_logps(hidden, weight, targets, chunk=None).sum().backward()
    expected = hidden.grad.clone()

    def backward_flops(head: torch.Tensor) -> int:
        hidden.grad = None
        out = token_logps(hidden, head, targets, chunk=5)  # the chunked head
        with FlopCounterMode(display=False) as counter:
            out.sum().backward()
        return counter.get_total_flops()

    frozen = backward_flops(weight)
    torch.testing.assert_close(hidden.grad, expected)
    assert weight.grad is None
    # per chunk: the logits again and the hidden gradient; a trainable head adds its weight gradient
    assert frozen * 3 == backward_flops(weight.clone().requires_grad_()) * 2


# ---- the model card ------------------------------------------------------------------------------


def card_config(*overrides: str):
    return compose_config(["exp_name=card", "run_dir=/runs/card", "datasets=[from_uri]",
                           "datasets.from_uri.uri=/staging/r/dataset.json",
                           f"datasets.from_uri.sha256={'ab' * 32}", *overrides])  # fmt: skip


def header(card: str) -> dict[str, str]:
    block = card.split("---\n")[1]
    return dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)


def test_the_card_of_an_adapter_run_says_base_data_loss_adapter_steps_and_how_to_load_it():
    card = model_card.render(card_config("adapter=lora", "loss.beta=0.2"), step=30,
                             dataset_uris={"from_uri": "gs://bucket/prefs.jsonl"})  # fmt: skip
    assert header(card) == {"base_model": '"models/tiny"', "library_name": "peft"}
    assert "tags:\n- dpo_lib\n- dpo\n- lora\n---" in card
    assert f"| dataset `from_uri` | `gs://bucket/prefs.jsonl`, sha256 `{'ab' * 32}`; 10% held out |" in card
    assert "| loss | `dpo` (beta 0.2, label_smoothing 0) |" in card
    assert "LoRA r 16, alpha 32, dropout 0, on all-linear; this folder holds the adapters alone" in card
    assert "| steps | 30 optimizer steps of 8 pairs" in card
    assert "Not evaluated yet: `python -m dpo_lib evaluate --run-dir /runs/card`" in card
    assert 'AutoPeftModelForCausalLM.from_pretrained("/runs/card/final")' in card


def test_the_card_of_a_merged_run_is_a_transformers_model_and_shows_the_held_out_metrics():
    evaluation = {"loss": 0.31, "rewards/accuracies": 0.9, "logps/accuracies": 0.85, "n_pairs": 20, "step": 30,
                  "reference": {"loss": 0.6931, "logps/accuracies": 0.4}}  # fmt: skip
    card = model_card.render(card_config("adapter=lora", "adapter.merge=true"), step=30, evaluation=evaluation)
    assert header(card)["library_name"] == "transformers"
    assert "| dataset `from_uri` | `/staging/r/dataset.json`" in card  # no original URI given: the staged copy
    assert "20 held-out pairs, after step 30" in card
    assert "| loss | 0.3100 | 0.6931 |" in card
    assert "| rewards/accuracies | 0.9000 | — |" in card
    assert "| logps/accuracies | 0.8500 | 0.4000 |" in card
    assert 'AutoModelForCausalLM.from_pretrained("/runs/card/final")' in card
    staged = card_config("model.source_uri=gs://models/tiny", f"model.content_hash={'cd' * 32}")
    assert f"| base model | `models/tiny`, staged from `gs://models/tiny`, content hash `{'cd' * 32}` |" in (
        model_card.render(staged, step=3)
    )
    full = model_card.render(card_config("loss=sft"), step=3)
    assert "| adapter | none: every weight trained |" in full and "| loss | `sft` |" in full
