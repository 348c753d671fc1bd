"""get_stats(): counts, character-length percentiles and duplicates, from one streaming pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dpo_lib.data.dataset import open_dataset
from tests.support.datasets import json_array, jsonl, msg, record, write


def test_length_percentiles_on_a_known_dataset(tmp_path: Path) -> None:
    # prompt lengths 1..10, chosen 10..100, rejected always 2 characters
    rows = [record("p" * i, "c" * (10 * i), "no") for i in range(1, 11)]
    stats = open_dataset(write(tmp_path, "d.jsonl", jsonl(rows))).get_stats()

    assert (stats.record_count, stats.valid_count, stats.invalid_count) == (10, 10, 0)
    prompt, chosen, rejected = (stats.lengths[name] for name in ("prompt", "chosen", "rejected"))
    # linear interpolation between ranks: p50 of 1..10 is 5.5, p90 is 9.1, p99 is 9.91
    assert (prompt.p50, prompt.p90, prompt.p99, prompt.max) == pytest.approx((5.5, 9.1, 9.91, 10))
    assert (chosen.p50, chosen.p90, chosen.p99, chosen.max) == pytest.approx((55, 91, 99.1, 100))
    assert (rejected.p50, rejected.p99, rejected.max) == (2, 2, 2)


def test_stats_count_invalid_records_and_duplicates(tmp_path: Path) -> None:
    rows = [record("a", "b", "c"), record("a", "b", "c"), record(chosen=""), record("x", "y", "z")]
    stats = open_dataset(write(tmp_path, "d.json", json_array(rows))).get_stats()
    assert (stats.record_count, stats.valid_count, stats.invalid_count) == (4, 3, 1)
    assert stats.duplicate_count == 1
    assert stats.format == "json"


def test_conversation_lengths_count_message_contents(tmp_path: Path) -> None:
    rec = {
        "prompt": [msg("system", "abc"), msg("user", "de")],
        "chosen": [msg("assistant", "1234")],
        "rejected": [msg("assistant", "1")],
    }
    stats = open_dataset(write(tmp_path, "c.jsonl", jsonl([rec]))).get_stats()
    assert {name: s.max for name, s in stats.lengths.items()} == {"prompt": 5, "chosen": 4, "rejected": 1}


def test_stats_of_a_dataset_without_valid_records_have_no_lengths(tmp_path: Path) -> None:
    stats = open_dataset(write(tmp_path, "d.json", "[]")).get_stats()
    assert stats.valid_count == 0
    assert stats.lengths["prompt"].p50 is None
    assert json.loads(json.dumps(stats.to_dict()))["lengths"]["chosen"]["max"] is None


def test_validate_and_get_stats_share_one_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl([record()]))
    opened = []

    def open_stream():
        opened.append(path)
        return path.open("rb")

    dataset = open_dataset(open_stream)
    dataset.validate()
    dataset.get_stats()
    assert len(opened) == 1
