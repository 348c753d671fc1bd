"""The benchmark command runs on a CPU and reports what docs/benchmarks.md quotes."""

import json
import subprocess
import sys


def test_bench_prints_throughput_memory_and_settings_as_its_last_line():
    proc = subprocess.run(
        [sys.executable, "-m", "dpo_lib", "bench", "--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1",
         "--pairs-per-step", "2", "--prompt-len", "8", "16", "--completion-len", "8", "16"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tokens_per_s"] > 0 and result["step_s_median"] > 0
    assert {"mfu", "peak_mem_gib", "features", "strategy", "pairs_per_step"} <= result.keys()
    assert result["features"]["packing"] is False  # auto: off on a CPU
    assert result["pairs_per_step"] == 2 and result["prompt_len"] == [8, 16]
