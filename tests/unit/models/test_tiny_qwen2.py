"""The second architecture the tests train (``make-tiny-model --arch qwen2``): a Qwen2ForCausalLM with its
own tokenizer and Qwen's ChatML template, loaded back through from_pretrained, rendering conversational
toy pairs as the trainer needs them."""

import pytest

from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.tokenize import render_pair, tokenize_pair
from dpo_lib.data.toy import as_conversation, make_toy_pairs
from dpo_lib.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("qwen2") / "tiny", arch="qwen2")


def test_it_loads_as_qwen2_with_its_own_chat_tokens(qwen2_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(qwen2_dir)
    tokenizer = AutoTokenizer.from_pretrained(qwen2_dir)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.model_type == "qwen2"
    assert model.model.layers[0].self_attn.q_proj.bias is not None  # Qwen2's biased q/k/v, unlike Llama
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (None, "<|im_end|>", "<|endoftext|>")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_conversational_toy_pairs_render_through_the_template(qwen2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(qwen2_dir)
    record = as_conversation(make_toy_pairs(1, seed=3)[0])
    pair = PreferencePair(prompt=record["prompt"], chosen=record["chosen"], rejected=record["rejected"])
    prompt, chosen, rejected = render_pair(pair, tokenizer)
    assert prompt.endswith("<|im_start|>assistant\n") and chosen.endswith("<|im_end|>\n")
    assert chosen.removesuffix("<|im_end|>\n") == record["chosen"][0]["content"]
    tokens = tokenize_pair(pair, tokenizer, max_length=256, max_prompt_length=128)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in tokens.chosen_ids and tokens.truncated == 0


def test_an_unknown_architecture_is_refused(tmp_path):
    with pytest.raises(ValueError, match="arch must be one of llama, qwen2"):
        build_tiny_model(tmp_path / "m", arch="gpt2")
