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
