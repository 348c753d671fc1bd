"""``make-tiny-model DIR``: a tiny Llama-style model in Hugging Face format, built locally
(``--arch qwen2``: a Qwen2-style one, with Qwen's ChatML chat template).

There is no model hub on CI or in the demo, so the tests and the demo train this
model instead. It is saved with ``save_pretrained`` (config, safetensors weights,
a byte-level BPE tokenizer trained with the ``tokenizers`` library, a chat
template) and always loaded back through ``from_pretrained``, so the code path
is the one a real checkpoint takes.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dpo_lib.data.toy import toy_corpus
from dpo_lib.io import make_readable_by_all

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>"]

# Renders {role, content} messages; add_generation_prompt opens the assistant turn so the
# rendered prompt is an exact prefix of prompt + completion.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


# Qwen's ChatML: <|im_start|>role, the content, <|im_end|>; no BOS token, <|endoftext|> pads.
QWEN2_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TokenizerStyle:
    """A model family's special tokens and chat template."""

    special_tokens: list[str]
    chat_template: str
    pad_token: str
    eos_token: str
    bos_token: str | None


STYLES = {
    "llama": TokenizerStyle(SPECIAL_TOKENS, CHAT_TEMPLATE, "<|pad|>", "<|eos|>", "<|bos|>"),
    "qwen2": TokenizerStyle(QWEN2_SPECIAL_TOKENS, QWEN2_CHAT_TEMPLATE, "<|endoftext|>", "<|im_end|>", None),
}
ARCHITECTURES = tuple(STYLES)


def build_tokenizer(vocab_size: int = 1024, arch: str = "llama"):
    """Train a byte-level BPE tokenizer on the toy corpus; any UTF-8 text still encodes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    style = STYLES[arch]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=style.special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(toy_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=style.pad_token,
        bos_token=style.bos_token,
        eos_token=style.eos_token,
        chat_template=style.chat_template,
    )


def tiny_config(arch: str, tokenizer, *, hidden_size: int, num_layers: int):
    """A Llama or Qwen2 config of tiny sizes (Qwen2: biased q/k/v projections, rope θ 10⁶, as Qwen2.5)."""
    from transformers import LlamaConfig, Qwen2Config

    sizes = dict(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 4,
                 num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=512, tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                 bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    if arch == "qwen2":
        return Qwen2Config(**sizes, rope_theta=1_000_000.0, use_sliding_window=False)
    return LlamaConfig(**sizes)


def build_tiny_model(
    out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0, arch: str = "llama"
) -> Path:
    """Write a randomly initialised tiny Llama (or Qwen2) and its tokenizer to ``out_dir`` (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM

    if arch not in STYLES:
        raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, not {arch!r}")
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(arch=arch)
    config = tiny_config(arch, tokenizer, hidden_size=hidden_size, num_layers=num_layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        # mkdtemp makes it private and safetensors writes model.safetensors 0600; trainer containers run as another uid
        make_readable_by_all(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", help="directory to write the model to, e.g. models/tiny")
    parser.add_argument("--arch", choices=ARCHITECTURES, default="llama", help="llama, or qwen2 (ChatML template)")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if the directory has a model")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out_dir)
    if (out / "config.json").exists() and not args.force:
        print(f"{out} already holds a model; keeping it (use --force to rebuild)")
        return 0
    build_tiny_model(out, hidden_size=args.hidden_size, num_layers=args.layers, seed=args.seed, arch=args.arch)
    print(f"wrote a tiny {args.arch} model to {out}")
    return 0
