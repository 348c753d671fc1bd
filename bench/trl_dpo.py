"""The same benchmark as ``python -m dpo_lib bench``, run through Hugging Face TRL's DPOTrainer.

Same randomly initialised model shape, the same preference pairs in the same steps, bf16
autocast, AdamW. Prints one JSON line last with ``tokens_per_s`` (real tokens, as counted by
TRL from the attention mask), ``real_tokens_per_step`` (the timed steps' mean; ``step_tokens``
lists every step's, warmup included), ``step_s_median``, ``mfu`` (with the FLOPs per token it
assumed) and ``peak_mem_gib``, so the two can be compared side by side.

    python bench/trl_dpo.py [--precompute-ref] [--gradient-checkpointing] [--liger]
                            [--shape tinyllama|llama3-8b|tiny] [--adapter lora] [--steps 20]

Same tokens on both sides. ``dpo_lib bench`` draws each pair with ``random_pairs``: a prompt
of 128-256 token ids and two completions of 128-255, ids in ``3..vocab-1``, no BOS or EOS,
from ``random.Random(seed)``. :func:`random_rows` makes the same draws in the same order and
writes token ``i`` as the word ``w{i}``; :func:`word_tokenizer` maps each word back to
exactly one token. TRL (1.16) appends the EOS to each completion's text (no space before it) and
adds no BOS with this tokenizer, so a completion of n ids is written as its first n-1 words
plus TRL's EOS: n tokens, as in ``dpo_lib bench``. The specials are ``<pad>``, ``<s>`` and
``</s>`` (ids 0-2), which no data word contains; a word outside the vocabulary raises. The
completions start with a space, as TRL's plain-text datasets do, since TRL joins prompt and
completion text with nothing between them. The rows are laid in the order dpo_lib's
``PairBatches`` takes them in the first epoch and TRL reads them in order, so step ``k`` has
the same pairs, and the same real tokens, as ``dpo_lib bench``'s step ``k``; the JSON line
says whether TRL's own count agreed with that on every step.

MFU is model FLOPs over 790 TFLOP/s (H200 dense bf16), N being the parameters less the input
embedding: full fine-tuning 6N per token for the policy plus 2N for a live reference; LoRA
2N forward plus 2N backward through the activations (no weight gradients for the frozen base)
plus 2N for the reference forward (TRL's reference for a PEFT model is the same model with
its adapters disabled); adapter FLOPs are left out. Recomputed activations are not counted.

TRL is not a dependency of this project; this script is for comparison only. On a CPU
(``--device cpu``, no bf16 autocast there) it runs the ``tiny`` shape in about a minute.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from typing import Any

SHAPES: dict[str, dict[str, int]] = {
    # TinyLlama-1.1B, as dpo_lib bench's default.
    "tinyllama": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                      intermediate_size=5632, vocab_size=32000),
    # Llama-3-8B.
    "llama3-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256),
    # dpo_lib bench --tiny: runs on a CPU.
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=176, vocab_size=512),
}  # fmt: skip
PEAK_FLOPS = 790e12  # H200 dense bf16, as in dpo_lib bench
PAD, BOS, EOS = "<pad>", "<s>", "</s>"  # ids 0, 1, 2: no data word w{i} contains any of them
FIRST_WORD_ID = 3  # data ids are drawn from 3..vocab-1, as dpo_lib bench draws them
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def word_tokenizer(vocab_size: int) -> Any:
    """Token ``i`` is the word ``w{i}`` for ``i >= 3``; 0-2 are ``<pad>``, ``<s>`` and ``</s>``.

    Words are split on whitespace only and each maps to exactly one id. The specials are
    matched anywhere in the text (``w5</s>`` is ``w5`` then EOS) but never inside a data
    word; an unknown word raises instead of becoming an unknown token. Encoding adds no BOS
    or EOS of its own.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {PAD: 0, BOS: 1, EOS: 2} | {f"w{i}": i for i in range(FIRST_WORD_ID, vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))  # <unk> is not in the vocabulary
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS)


def random_rows(
    n: int,
    vocab_size: int,
    seed: int,
    prompt_len: tuple[int, int] = (128, 256),
    completion_len: tuple[int, int] = (128, 255),
) -> list[dict[str, str]]:
    """``n`` pairs as TRL's plain-text rows, the same draws as dpo_lib bench's ``random_pairs``.

    Lengths are in tokens as TRL will count them: a completion of n tokens is n-1 words
    plus the EOS that TRL appends.
    """
    if min(*prompt_len, *completion_len) < 1:
        raise ValueError("prompts and completions need at least one token")
    rng = random.Random(seed)

    def words(lo: int, hi: int) -> list[str]:
        return [f"w{rng.randrange(FIRST_WORD_ID, vocab_size)}" for _ in range(rng.randint(lo, hi))]

    rows = []
    for _ in range(n):
        prompt, chosen, rejected = words(*prompt_len), words(*completion_len), words(*completion_len)
        # The last drawn id of each completion is where TRL's EOS goes.
        rows.append({"prompt": " ".join(prompt), "chosen": " " + " ".join(chosen[:-1]),
                     "rejected": " " + " ".join(rejected[:-1])})  # fmt: skip
    return rows


def step_order(n: int, seed: int) -> list[int]:
    """The order in which dpo_lib's ``PairBatches`` takes ``n`` pairs in its first epoch."""
    order = list(range(n))
    random.Random(seed * 1_000_003).shuffle(order)
    return order


def row_tokens(row: dict[str, str]) -> int:
    """Real tokens of prompt + chosen + EOS and prompt + rejected + EOS, as TRL will count them."""
    prompt = len(row["prompt"].split())
    return 2 * prompt + len(row["chosen"].split()) + len(row["rejected"].split()) + 2


def flops_per_token(n_params: int, adapter: str, live_reference: bool) -> tuple[int, str]:
    """Model FLOPs a training step does per real token, and how many N that is."""
    per_policy = 6 if adapter == "none" else 4  # LoRA: forward 2N, backward through activations 2N
    multiple = per_policy + (2 if live_reference else 0)
    return multiple * n_params, f"{multiple}N"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama")
    parser.add_argument("--tiny", action="store_true", help="same as --shape tiny, as dpo_lib bench --tiny")
    parser.add_argument("--adapter", choices=["none", "lora"], default="none",
                        help="lora: r 16, alpha 32 on all seven linear projections, bf16 base weights")  # fmt: skip
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=[128, 256], metavar=("MIN", "MAX"))
    parser.add_argument("--completion-len", type=int, nargs=2, default=[128, 255], metavar=("MIN", "MAX"),
                        help="tokens, TRL's EOS included")  # fmt: skip
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precompute-ref", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--liger", action="store_true", help="DPOConfig(use_liger_kernel=True): needs liger-kernel")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.tiny:
        args.shape = "tiny"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)

    import torch
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, LlamaConfig, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device == "cuda"
    lora = args.adapter == "lora"
    shape = SHAPES[args.shape]
    total_steps = args.warmup + args.steps
    n = args.pairs_per_step * total_steps
    rows = random_rows(n, shape["vocab_size"], args.seed, tuple(args.prompt_len), tuple(args.completion_len))
    rows = [rows[i] for i in step_order(n, args.seed)]
    expected = [sum(map(row_tokens, rows[k * args.pairs_per_step : (k + 1) * args.pairs_per_step]))
                for k in range(total_steps)]  # fmt: skip

    # Full fine-tuning keeps fp32 master weights under bf16 autocast; LoRA users load the base in bf16.
    dtype = torch.bfloat16 if lora else torch.float32
    torch.manual_seed(args.seed)
    config = LlamaConfig(**shape, max_position_embeddings=2048, tie_word_embeddings=False)
    with torch.device(device):  # random init on the GPU: seconds, not minutes, for 8B
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    n_params = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    # TRL's usual path: the trainer loads the policy, and its reference, from a model directory.
    model_dir = tempfile.TemporaryDirectory(prefix="trl-bench-model-")
    model.save_pretrained(model_dir.name)
    del model
    if cuda:
        torch.cuda.empty_cache()

    peft_config = None
    if lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=LORA_TARGETS,
                                 task_type="CAUSAL_LM")  # fmt: skip

    in_order: dict[str, Any] = {}
    trainer_class = DPOTrainer
    if "train_sampling_strategy" in DPOConfig.__dataclass_fields__:
        in_order["train_sampling_strategy"] = "sequential"
    else:  # older transformers: read the rows in order all the same

        class InOrder(DPOTrainer):
            def _get_train_sampler(self, *_: Any, **__: Any) -> Any:
                return torch.utils.data.SequentialSampler(self.train_dataset)

        trainer_class = InOrder
    output_dir = tempfile.TemporaryDirectory(prefix="trl-bench-")
    dpo_config = DPOConfig(
        output_dir=output_dir.name,
        per_device_train_batch_size=args.pairs_per_step,
        max_steps=total_steps,
        learning_rate=5e-7,
        bf16=cuda,
        use_cpu=not cuda,
        gradient_checkpointing=args.gradient_checkpointing,
        precompute_ref_log_probs=args.precompute_ref,
        use_liger_kernel=args.liger,
        max_length=None,
        model_init_kwargs={"dtype": dtype},
        logging_steps=1000,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        dataloader_num_workers=0,
        **in_order,
    )
    timings: dict[str, list] = {"starts": [], "times": [], "tokens": []}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            sync()
            if cuda and len(timings["starts"]) == args.warmup:
                torch.cuda.reset_peak_memory_stats()
            timings["starts"].append((time.perf_counter(), trainer._total_train_tokens))

        def on_step_end(self, *_: Any, **__: Any) -> None:
            sync()
            started, tokens_before = timings["starts"][-1]
            timings["tokens"].append(trainer._total_train_tokens - tokens_before)
            if len(timings["starts"]) > args.warmup:
                timings["times"].append(time.perf_counter() - started)

    trainer = trainer_class(
        model=model_dir.name,
        args=dpo_config,
        train_dataset=Dataset.from_list(rows),
        processing_class=word_tokenizer(shape["vocab_size"]),
        peft_config=peft_config,
        callbacks=[StepTimer()],
    )
    trainer.train()
    timed_tokens = timings["tokens"][args.warmup :]
    tokens_per_s = sum(timed_tokens) / sum(timings["times"])
    live_reference = not args.precompute_ref
    flops, flops_label = flops_per_token(n_params, args.adapter, live_reference)
    if not live_reference:
        reference = "precomputed log-probs"
    else:
        reference = "separate model" if trainer.ref_model is not None else "policy with adapters disabled"
    print(json.dumps({
        "implementation": f"trl {trl.__version__}",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "model": args.shape,
        "params_without_input_embedding": n_params,
        "adapter": args.adapter,
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "reference": reference,
        "pairs_per_step": args.pairs_per_step,
        "prompt_len": args.prompt_len,
        "completion_len": args.completion_len,
        "steps": args.steps,
        "features": {"precompute_ref": args.precompute_ref, "gradient_checkpointing": args.gradient_checkpointing,
                     "liger": args.liger, "lora": lora, "bf16_autocast": cuda,
                     "base_dtype": str(dtype).removeprefix("torch.")},
        "real_tokens_per_step": round(statistics.mean(timed_tokens), 1),
        "step_tokens": timings["tokens"],
        "tokens_as_dpo_lib_bench": timings["tokens"] == expected,
        "tokens_per_s": round(tokens_per_s, 1),
        "step_s_median": round(statistics.median(timings["times"]), 4),
        "flops_per_token": flops_label,
        "mfu": round(tokens_per_s * flops / PEAK_FLOPS, 4) if cuda else None,
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else 0.0,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }), flush=True)  # fmt: skip
    model_dir.cleanup()
    output_dir.cleanup()


if __name__ == "__main__":
    main()
