"""bench/trl_dpo.py feeds TRL the same real tokens, step by step, as ``python -m dpo_lib bench``.

TRL is not a project dependency, so its preprocessing is mirrored here in a few lines, as
TRL 1.16.0 does it for plain-text rows: ``DPOTrainer._prepare_dataset`` appends the EOS
token's text to chosen and rejected (no space before it) and tokenizes prompt, prompt +
chosen and prompt + rejected with the tokenizer's defaults (``data_utils._tokenize``);
the prompt ends where the tokenized prompt and prompt + completion stop agreeing
(``common_prefix_length``). ``DataCollatorForPreference`` rebuilds prompt + completion per
row, and ``compute_loss`` counts the attention mask's ones: ``len(prompt + chosen) +
len(prompt + rejected)`` tokens per pair. That the script agrees with the real TRL is
checked by running it (``tokens_as_dpo_lib_bench`` in its JSON line).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dpo_lib.bench import SHAPES, random_pairs
from dpo_lib.training.data import PairBatches

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "trl_dpo.py"
N_PAIRS, PAIRS_PER_STEP, SEED = 240, 8, 0
LENGTHS = argparse.Namespace(prompt_len=[128, 256], completion_len=[128, 255])  # dpo_lib bench's defaults


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trl_dpo_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # TRL is imported only inside main(): not needed here
    return module


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def trl_tokenize(tokenizer: Any, row: dict[str, str]) -> tuple[list[int], list[int], list[int]]:
    """Prompt, chosen and rejected ids of one plain-text row, as TRL 1.16.0's DPOTrainer makes them."""
    eos = tokenizer.eos_token
    chosen, rejected = (text if text.endswith(eos) else text + eos for text in (row["chosen"], row["rejected"]))
    prompt_ids = tokenizer(text=row["prompt"])["input_ids"]
    with_chosen = tokenizer(text=row["prompt"] + chosen)["input_ids"]
    with_rejected = tokenizer(text=row["prompt"] + rejected)["input_ids"]
    n = min(common_prefix(prompt_ids, with_chosen), common_prefix(prompt_ids, with_rejected))
    return prompt_ids[:n], with_chosen[n:], with_rejected[n:]


def trl_real_tokens(tokenizer: Any, row: dict[str, str]) -> int:
    prompt, chosen, rejected = trl_tokenize(tokenizer, row)
    return 2 * len(prompt) + len(chosen) + len(rejected)


@pytest.mark.parametrize("shape", ["tiny", "tinyllama"])
def test_trl_sees_the_token_ids_dpo_lib_bench_trains_on(script, shape):
    """Pair by pair, the same ids; only each completion's last id is TRL's EOS instead."""
    vocab_size = SHAPES[shape]["vocab_size"]
    assert script.SHAPES[shape] == SHAPES[shape]
    tokenizer = script.word_tokenizer(vocab_size)
    ours = random_pairs(N_PAIRS, LENGTHS, vocab_size, SEED)
    rows = script.random_rows(N_PAIRS, vocab_size, SEED, tuple(LENGTHS.prompt_len), tuple(LENGTHS.completion_len))
    for pair, row in zip(ours, rows, strict=True):
        prompt, chosen, rejected = trl_tokenize(tokenizer, row)
        assert prompt == pair.prompt_ids  # no BOS added
        for trl_ids, our_ids in ((chosen, pair.chosen_ids), (rejected, pair.rejected_ids)):
            assert trl_ids[:-1] == our_ids[:-1] and trl_ids[-1] == tokenizer.eos_token_id
        assert 2 * len(prompt) + len(chosen) + len(rejected) == pair.num_tokens == script.row_tokens(row)


def test_each_step_has_the_real_tokens_of_dpo_lib_bench_s_step(script):
    """TRL reads the rows in order; they are laid in the order dpo_lib's batches take them."""
    vocab_size = SHAPES["tinyllama"]["vocab_size"]
    tokenizer = script.word_tokenizer(vocab_size)
    rows = script.random_rows(N_PAIRS, vocab_size, SEED)
    rows = [rows[i] for i in script.step_order(N_PAIRS, SEED)]
    trl_steps = [sum(trl_real_tokens(tokenizer, row) for row in rows[k : k + PAIRS_PER_STEP])
                 for k in range(0, N_PAIRS, PAIRS_PER_STEP)]  # fmt: skip
    batches = PairBatches(random_pairs(N_PAIRS, LENGTHS, vocab_size, SEED), PAIRS_PER_STEP, SEED, pad_token_id=0)
    ours = [batches.get(k)["num_tokens"] for k in range(N_PAIRS // PAIRS_PER_STEP)]
    assert trl_steps == ours
    assert 5_500 < sum(ours) / len(ours) < 6_800  # ~6.2k, not the ~10.3k the old tokenizer made


@pytest.mark.parametrize("vocab_size", [512, 32000])
def test_every_word_is_one_token_and_the_specials_never_match_inside_one(script, vocab_size):
    tokenizer = script.word_tokenizer(vocab_size)
    words = [f"w{i}" for i in range(script.FIRST_WORD_ID, vocab_size)]
    assert tokenizer(text=" ".join(words))["input_ids"] == list(range(script.FIRST_WORD_ID, vocab_size))
    assert tokenizer(text="w10 w21</s>")["input_ids"] == [10, 21, tokenizer.eos_token_id]  # TRL's EOS, no space
    assert [tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id] == [0, 1, 2]
    assert not any(special in word for special in tokenizer.all_special_tokens for word in words)
    with pytest.raises(Exception, match="UNK"):  # an unknown word fails instead of becoming a token
        tokenizer(text=f"w{vocab_size}")


@pytest.mark.parametrize(
    ("adapter", "live_reference", "label"),
    [("none", True, "8N"), ("none", False, "6N"), ("lora", True, "6N"), ("lora", False, "4N")],
)
def test_mfu_counts_the_flops_a_step_does(script, adapter, live_reference, label):
    flops, said = script.flops_per_token(1000, adapter, live_reference)
    assert said == label and flops == int(label[:-1]) * 1000
