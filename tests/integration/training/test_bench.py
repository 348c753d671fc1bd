"""The benchmark command runs on a CPU and reports what docs/benchmarks.md quotes."""

import json
import subprocess
import sys

import pytest

SMALL = ["--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--pairs-per-step", "2",
         "--prompt-len", "8", "16", "--completion-len", "8", "16"]  # fmt: skip


def bench(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "dpo_lib", "bench", *SMALL, *args],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def single() -> dict:
    return bench()


def test_bench_prints_throughput_memory_and_settings_as_its_last_line(single):
    result = single
    assert result["tokens_per_s"] > 0 and result["step_s_median"] > 0
    assert {"mfu", "peak_mem_gib", "features", "strategy", "pairs_per_step"} <= result.keys()
    assert result["features"]["packing"] is False  # auto: off on a CPU
    assert result["pairs_per_step"] == 2 and result["prompt_len"] == [8, 16]


@pytest.mark.parametrize("strategy", ["fsdp", "tensor_parallel"])
def test_the_multi_gpu_benchmark_command_runs_over_two_processes_and_counts_the_whole_model(single, strategy):
    """What ``bench/h200.sh OUT fsdp`` runs on a multi-GPU machine, here over two gloo processes."""
    result = bench("--strategy", strategy, "--processes", "2")
    assert result["strategy"] == strategy and result["processes"] == 2 and result["tokens_per_s"] > 0
    # Sharded parameters are counted whole, so MFU compares like with like across strategies.
    assert result["params_without_input_embedding"] == single["params_without_input_embedding"]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_lora_benchmark_runs_with_the_policy_as_its_own_reference_and_counts_6n(single, precision):
    """What ``bench/h200.sh OUT 8b-lora`` runs, on the tiny shape: bf16 base weights as on a GPU, or fp32."""
    result = bench("--adapter", "lora", "--precision", precision)
    assert result["adapter"] == "lora" and result["reference"] == "policy with adapters disabled"
    assert result["flops_per_token"] == "6N" and single["flops_per_token"] == "8N"  # LoRA: no weight gradients
    # N is the base's, as for full fine-tuning; only the adapters train
    assert result["params_without_input_embedding"] == single["params_without_input_embedding"]
    assert 0 < result["trainable_params"] < result["params_without_input_embedding"]
    assert result["features"]["base_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[precision]
    assert result["features"]["bf16_autocast"] is (precision == "bf16") and result["tokens_per_s"] > 0


def test_the_benchmark_shapes_are_the_trl_scripts():
    import importlib.util

    from dpo_lib.bench import SHAPES
    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("trl_dpo", REPO / "bench" / "trl_dpo.py")
    trl_dpo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(trl_dpo)
    assert SHAPES == trl_dpo.SHAPES
    assert SHAPES["llama3-8b"] == dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                                       num_key_value_heads=8, intermediate_size=14336, vocab_size=128256)  # fmt: skip
