"""Validation streams: memory stays far below the file size, and records are read as they
are needed rather than after reading the whole file."""

from __future__ import annotations

import io
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from dpo_lib.data.dataset import open_dataset
from tests.support.datasets import record

RECORDS = 3000
TEXT = "lorem ipsum dolor sit amet " * 40  # about 1 KB per field


def big_record(i: int) -> dict[str, str]:
    return record(f"{i} {TEXT}", f"yes {i} {TEXT}", f"no {i} {TEXT}")


def write_jsonl(path: Path, count: int = RECORDS) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            out.write(json.dumps(big_record(i)) + "\n")
    return path


def write_json_array(path: Path, count: int = RECORDS) -> Path:
    with path.open("w", encoding="utf-8") as out:
        out.write("[")
        for i in range(count):
            out.write(("," if i else "") + json.dumps(big_record(i)))  # one long line
        out.write("]")
    return path


def traced_peak(path: Path) -> int:
    """Peak bytes allocated by Python while validating ``path``."""
    tracemalloc.start()
    try:
        report = open_dataset(path).validate()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok, report.format_text()
    return peak


@pytest.mark.parametrize("writer", [write_jsonl, write_json_array], ids=["jsonl", "json-array"])
def test_validation_memory_does_not_grow_with_the_file(tmp_path: Path, writer: Callable[..., Path]) -> None:
    small, large = writer(tmp_path / "small"), writer(tmp_path / "large", 3 * RECORDS)
    assert large.stat().st_size > 25_000_000

    # Warm up first: lazy imports (numpy) allocate once and are not data memory.
    open_dataset(writer(tmp_path / "warm-up", 1)).validate()

    small_peak, large_peak = traced_peak(small), traced_peak(large)
    assert large_peak < small_peak * 1.1 + 100_000, (small_peak, large_peak)
    assert large_peak < large.stat().st_size / 5


class CountingStream(io.RawIOBase):
    """A binary stream that records how many bytes were handed out."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._inner.read(size)
        self.consumed += len(chunk)
        return chunk


@pytest.mark.parametrize("as_array", [False, True], ids=["jsonl", "json-array"])
def test_the_first_pair_arrives_before_the_file_is_read(as_array: bool) -> None:
    rows = [json.dumps(big_record(i)) for i in range(500)]
    data = ("[" + ",\n".join(rows) + "]" if as_array else "\n".join(rows)).encode()
    stream = CountingStream(data)

    pairs = open_dataset(lambda: stream).iter_pairs()
    first = next(pairs)

    assert first.prompt.startswith("0 ")
    assert stream.consumed < len(data) / 10
    pairs.close()
