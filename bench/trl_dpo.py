"""The same benchmark as ``python -m dpo_lib bench``, run through Hugging Face TRL's DPOTrainer.

Same randomly initialised model shape, same pair count per step, same prompt and
completion length ranges, bf16 autocast over fp32 master weights, AdamW. Prints one
JSON line last with ``tokens_per_s`` (real tokens, as counted by TRL from the attention
mask), ``step_s_median``, ``mfu`` and ``peak_mem_gib``, so the two can be compared
side by side in one session.

    python bench/trl_dpo.py [--precompute-ref] [--gradient-checkpointing] [--steps 20]

TRL is not a dependency of this project; this script is for comparison only.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time

SHAPE = dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
             intermediate_size=5632, vocab_size=32000)  # fmt: skip


def word_tokenizer(vocab_size: int):
    """A tokenizer whose token i is the word ``w{i}``, so text of n words is exactly n tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="w0", eos_token="w2", bos_token="w1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precompute-ref", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import trl
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rng = random.Random(args.seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(f"w{rng.randrange(3, SHAPE['vocab_size'])}" for _ in range(rng.randint(lo, hi)))

    total_steps = args.warmup + args.steps
    n = args.pairs_per_step * total_steps
    # completions of 128-255 words plus the EOS TRL appends: 129-256 tokens, as in dpo_lib's bench
    rows = [{"prompt": text(128, 256), "chosen": text(128, 255), "rejected": text(128, 255)} for _ in range(n)]
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(LlamaConfig(**SHAPE, max_position_embeddings=2048, tie_word_embeddings=False))
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    # TRL's usual path: the trainer loads the policy, and its reference, from a model directory.
    model_dir = tempfile.mkdtemp(prefix="trl-bench-model-")
    model.save_pretrained(model_dir)
    del model

    config = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl-bench-"),
        per_device_train_batch_size=args.pairs_per_step,
        max_steps=total_steps,
        learning_rate=5e-7,
        bf16=True,
        gradient_checkpointing=args.gradient_checkpointing,
        precompute_ref_log_probs=args.precompute_ref,
        max_length=None,
        model_init_kwargs={"dtype": torch.float32},
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
    )
    timings: dict = {"starts": [], "times": [], "tokens": []}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            torch.cuda.synchronize()
            if len(timings["starts"]) == args.warmup:
                torch.cuda.reset_peak_memory_stats()
            timings["starts"].append((time.perf_counter(), trainer._total_train_tokens))

        def on_step_end(self, *_, **__):
            torch.cuda.synchronize()
            started, tokens_before = timings["starts"][-1]
            if len(timings["starts"]) > args.warmup:
                timings["times"].append(time.perf_counter() - started)
                timings["tokens"].append(trainer._total_train_tokens - tokens_before)

    trainer = DPOTrainer(
        model=model_dir,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=word_tokenizer(SHAPE["vocab_size"]),
        callbacks=[StepTimer()],
    )
    trainer.train()
    tokens_per_s = sum(timings["tokens"]) / sum(timings["times"])
    live_reference = not args.precompute_ref
    flops = (6 + (2 if live_reference else 0)) * n_params
    print(json.dumps({
        "implementation": f"trl {trl.__version__}",
        "device": torch.cuda.get_device_name(),
        "pairs_per_step": args.pairs_per_step,
        "steps": args.steps,
        "features": {"precompute_ref": args.precompute_ref, "gradient_checkpointing": args.gradient_checkpointing},
        "tokens_per_s": round(tokens_per_s, 1),
        "step_s_median": round(statistics.median(timings["times"]), 4),
        "mfu": round(tokens_per_s * flops / 790e12, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "torch": torch.__version__,
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
