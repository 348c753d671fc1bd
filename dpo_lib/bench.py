"""``python -m dpo_lib bench``: training throughput, MFU and peak memory of the real trainer.

It runs the trainer's own ``train_step`` on a randomly initialised model (``--shape``, or ``--tiny``)
and random preference pairs of varied lengths: ``--warmup`` untimed steps, then ``--steps`` timed
ones, optionally with LoRA (``--adapter lora``). The last line printed is one JSON object with
``tokens_per_s`` and ``mfu``, counted as docs/benchmarks.md describes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dpo_lib.settings import Settings
from dpo_lib.spec import TrainConfig

SHAPES = {
    # TinyLlama-1.1B: hidden 2048, 22 layers, 32 heads, 4 KV heads, MLP 5632, vocabulary 32000.
    "tinyllama": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                      intermediate_size=5632, vocab_size=32000),
    # Llama-3-8B: hidden 4096, 32 layers, 32 heads, 8 KV heads, MLP 14336, vocabulary 128256.
    "llama3-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=176, vocab_size=512),
}  # fmt: skip
MODEL_LABELS = {"tinyllama": "tinyllama-1.1b-shape", "llama3-8b": "llama3-8b-shape", "tiny": "tiny"}
PEAK_TFLOPS = {"cuda": 790.0, "cpu": 1.0}  # H200 dense bf16 as measured here; CPU MFU is not meaningful
LORA = {"adapter.r": 16, "adapter.alpha": 32, "adapter.dropout": 0.0, "adapter.target_modules": "all-linear"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--strategy", choices=["basic", "fsdp", "tensor_parallel"], default="basic")
    parser.add_argument("--processes", type=int, default=None, help="processes for fsdp/tensor_parallel")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama", help="the model's shape")
    parser.add_argument("--tiny", action="store_true", help="same as --shape tiny: runs in seconds on a CPU")
    parser.add_argument("--adapter", choices=["none", "lora"], default="none",
                        help="lora: r 16, alpha 32 on all seven linear projections, the base frozen")  # fmt: skip
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="auto: bf16 autocast on cuda (a LoRA base held in bf16), fp32 on cpu")  # fmt: skip
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=[128, 256], metavar=("MIN", "MAX"))
    parser.add_argument("--completion-len", type=int, nargs=2, default=[128, 255], metavar=("MIN", "MAX"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--loss", default="dpo")
    parser.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None, help="default: on cuda")
    parser.add_argument("--logp-chunk-size", type=int, default=1024, help="0: full logits")
    parser.add_argument("--precompute-ref", action="store_true")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on cuda")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument(
        "--compile-logp-head",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fuse the chunked head's element-wise work (default: with --compile)",
    )
    parser.add_argument("--attn", default="auto", help="attention implementation (auto: varlen on cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="profile the timed steps: a Chrome trace in DIR, the top kernels on stderr")  # fmt: skip


def random_pairs(n: int, args: argparse.Namespace, vocab_size: int, seed: int):
    from dpo_lib.data.tokenize import TokenizedPair

    rng = random.Random(seed)

    def tokens(lo: int, hi: int) -> list[int]:
        return [rng.randrange(3, vocab_size) for _ in range(rng.randint(lo, hi))]

    return [
        TokenizedPair(tokens(*args.prompt_len), tokens(*args.completion_len), tokens(*args.completion_len))
        for _ in range(n)
    ]


def bench_config(args: argparse.Namespace, model_dir: Path, run_dir: Path):
    """The training config the benchmark runs: the chosen loss and strategy, its switches, no eval or checkpoints."""
    from dpo_lib.config import build_config

    values = {
        "exp_name": "bench",
        "run_dir": str(run_dir),
        "model.name_or_path": str(model_dir),
        "trainer.device": args.device,
        "trainer.precision": args.precision,
        "trainer.packing": _switch(args.packing),
        "trainer.logp_chunk_size": args.logp_chunk_size or None,
        "trainer.precompute_ref_logps": args.precompute_ref,
        "trainer.compile": _switch(args.compile),
        "trainer.activation_checkpointing": args.activation_checkpointing,
        "trainer.compile_logp_head": _switch(args.compile_logp_head),
        "trainer.attn_implementation": args.attn,
        "batch_size": args.pairs_per_step,
        "eval_batch_size": args.pairs_per_step,
        "max_steps": args.warmup + args.steps,
        "warmup_steps": 0,
        "checkpoint_every": 0,
        "eval_every": 0,
        "seed": args.seed,
    }
    if args.processes:
        values["trainer.nproc"] = args.processes
    if args.adapter == "lora":
        values.update(LORA)
    return build_config([f"loss={args.loss}", f"trainer={args.strategy}", f"adapter={args.adapter}"], values)


def _switch(flag: bool | None) -> bool | str:
    return "auto" if flag is None else flag


def run(args: argparse.Namespace) -> int:
    if args.tiny:
        args.shape = "tiny"
    shape = SHAPES[args.shape]
    bench_dir = Settings.from_env().bench_dir
    shared = bench_dir or Path(tempfile.mkdtemp(prefix="dpo-bench-"))
    model_dir, run_dir = shared / "model", shared / "run"
    model_dir.mkdir(parents=True, exist_ok=True)
    config = bench_config(args, model_dir, run_dir)
    if config.needs_torchrun and "LOCAL_RANK" not in os.environ:
        from dpo_lib.training.torchrun import relaunch

        os.environ["DPO_BENCH_DIR"] = str(shared)  # every process writes and reads the same model config
        return relaunch(config.trainer, args.argv, command="bench")
    return measure(args, config, shape, model_dir)


def measure(args: argparse.Namespace, config: TrainConfig, shape: dict, model_dir: Path) -> int:
    import torch
    from transformers import LlamaConfig

    from dpo_lib.training.metrics import MeanTracker
    from dpo_lib.training.recipe import build_trainer

    if int(os.environ.get("RANK", "0")) == 0:
        LlamaConfig(**shape, max_position_embeddings=2048, tie_word_embeddings=False).save_pretrained(model_dir)
    trainer = build_trainer(config)
    if trainer.world_size > 1:
        torch.distributed.barrier()
    n_pairs = args.pairs_per_step * (args.warmup + args.steps)
    pairs = random_pairs(n_pairs, args, shape["vocab_size"], args.seed)
    setup_started = time.perf_counter()
    trainer.setup(train_pairs=pairs, eval_pairs=[])
    setup_s = time.perf_counter() - setup_started
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    # Steps queue GPU work without waiting for it, as in training; the device is synced only
    # around the timed steps, and per-step times come from CUDA events on the same stream.
    for _ in range(args.warmup):
        trainer.train_step(MeanTracker())
    with profiled(args.profile, trainer) as profiler:
        timer = StepTimer(trainer)
        tokens = 0
        for _ in range(args.steps):
            timer.mark()
            tokens += trainer.train_step(MeanTracker())[2]
        step_times, timed_s = timer.finish()
    if profiler is not None and trainer.is_main:
        report_profile(profiler, args.profile, timed_s)

    device = trainer.device
    totals = trainer.all_reduce_sum(torch.tensor([float(tokens)], device=device))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    peak = float(_all_reduce_max(trainer, torch.tensor([peak], device=device)))
    tokens_per_s = float(totals[0]) / timed_s
    policy = trainer.policy.causal_lm
    lora = args.adapter == "lora"
    # Whole shapes, also of sharded (DTensor) parameters, so MFU compares like with like across strategies.
    base = [p for p in policy.parameters() if not (lora and p.requires_grad)]
    input_embedding = policy.get_input_embeddings().weight
    n_params = sum(p.shape.numel() for p in base) - input_embedding.shape.numel()
    flops, flops_label = flops_per_token(n_params, lora, live_reference=trainer.reference is not None)
    peak_flops = PEAK_TFLOPS[device.type] * 1e12 * trainer.world_size
    result = {
        "strategy": args.strategy,
        "processes": trainer.world_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": MODEL_LABELS[args.shape],
        "params_without_input_embedding": n_params,
        "adapter": args.adapter,
        "trainable_params": sum(p.shape.numel() for p in policy.parameters() if p.requires_grad),
        "reference": _reference_kind(trainer),
        "pairs_per_step": args.pairs_per_step,
        "prompt_len": args.prompt_len,
        "completion_len": args.completion_len,
        "steps": args.steps,
        "loss": args.loss,
        "features": {
            "packing": trainer.options.packing,
            "logp_chunk_size": args.logp_chunk_size or None,
            "precompute_ref": args.precompute_ref,
            "compile": trainer.options.compile,
            "activation_checkpointing": args.activation_checkpointing,
            "compile_logp_head": trainer.options.compile_logp_head,
            "attn": trainer.options.attn_implementation,
            "lora": lora,
            "bf16_autocast": trainer.bf16,
            "base_dtype": str(input_embedding.dtype).removeprefix("torch."),
        },
        "setup_s": round(setup_s, 2),
        "tokens_per_s": round(tokens_per_s, 1),
        "step_s_median": round(statistics.median(step_times), 4),
        "flops_per_token": flops_label,
        "mfu": round(tokens_per_s * flops / peak_flops, 4) if device.type == "cuda" else None,
        "peak_mem_gib": round(peak, 2),
        "torch": torch.__version__,
        "profiled": args.profile is not None,
    }
    if trainer.is_main:
        print(json.dumps(result), flush=True)
    if trainer.world_size > 1:
        torch.distributed.destroy_process_group()
    return 0


@contextlib.contextmanager
def profiled(out_dir: Path | None, trainer):
    """A torch.profiler session over the block when ``out_dir`` is given, else nothing."""
    if out_dir is None:
        yield None
        return
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as profiler:
        yield profiler


def report_profile(profiler, out_dir: Path, timed_s: float) -> None:
    """The trace file, the share of the time the device was busy, and the ops that took it, on stderr."""
    from torch.autograd import DeviceType

    out_dir.mkdir(parents=True, exist_ok=True)
    profiler.export_chrome_trace(str(out_dir / "trace.json"))
    kernel_us = sum(e.time_range.elapsed_us() for e in profiler.events() if e.device_type == DeviceType.CUDA)
    table = profiler.key_averages().table(sort_by="self_device_time_total", row_limit=40, max_name_column_width=90)
    (out_dir / "top_ops.txt").write_text(table)
    print(table, file=sys.stderr)
    print(f"device busy {kernel_us / 1e6:.3f} s of {timed_s:.3f} s timed ({kernel_us / 1e4 / timed_s:.1f}%)",
          file=sys.stderr)  # fmt: skip


class StepTimer:
    """Wall time of a run of steps, and each step's duration on the device's stream."""

    def __init__(self, trainer) -> None:
        import torch

        self.cuda = trainer.device.type == "cuda"
        self.trainer = trainer
        self.marks: list = []
        trainer.synchronize()
        self.started = time.perf_counter()
        self._event = (lambda: torch.cuda.Event(enable_timing=True)) if self.cuda else None

    def mark(self) -> None:
        if self.cuda:
            event = self._event()
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def finish(self) -> tuple[list[float], float]:
        """Per-step seconds and the total, after waiting for the last step."""
        self.mark()
        self.trainer.synchronize()
        total = time.perf_counter() - self.started
        if self.cuda:
            steps = [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:], strict=False)]
        else:
            steps = [b - a for a, b in zip(self.marks, self.marks[1:], strict=False)]
        return steps, total


def _all_reduce_max(trainer, tensor):
    import torch.distributed as dist

    if trainer.world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor[0]


def flops_per_token(n_params: int, lora: bool, live_reference: bool) -> tuple[int, str]:
    """Model FLOPs a training step does per real token, and how many N that is (``bench/trl_dpo.py``'s labels)."""
    per_policy = 4 if lora else 6  # LoRA: forward 2N, backward through the activations 2N
    multiple = per_policy + (2 if live_reference else 0)
    return multiple * n_params, f"{multiple}N"


def _reference_kind(trainer) -> str:
    if trainer.reference_logps is not None:
        return "precomputed log-probs"
    if trainer.reference is None:
        return "none"
    return "policy with adapters disabled" if trainer.policy_has_adapters else "separate model"
