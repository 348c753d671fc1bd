"""``python -m dpo_lib bench-data`` on a tiny dataset, so that the benchmark cannot rot (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dpo_lib.data.bench_data import CASES, records

REPO = Path(__file__).resolve().parents[2]


def test_bench_data_prints_one_json_line_per_case() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dpo_lib", "bench-data", "--records", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["case"] for line in lines] == list(CASES)
    for line in lines:
        assert line["ok"] is True and line["warnings"] == 0
        assert line["records"] == line["validated_records"] == 20
        assert line["bytes"] > 20 * 1000
        assert line["mb_per_s"] > 0 and line["peak_rss_mib"] > 0


def test_generated_records_are_distinct_and_of_the_case_s_shape() -> None:
    text = list(records("json", 50))
    conversational = list(records("conversational", 50))
    assert len({json.dumps(r) for r in text}) == 50
    assert all(isinstance(r["chosen"], str) for r in text)
    assert all(r["prompt"][-1]["role"] == "user" and r["chosen"][0]["role"] == "assistant" for r in conversational)
