"""Hostile records: repeated keys, texts that differ only invisibly, huge strings, UTF-16 without a
byte order mark, millions of records. Each is answered with a clear issue, in linear time and
bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

from dpo_lib.data import records
from dpo_lib.data.dataset import open_dataset
from dpo_lib.data.validation import ValidationReport
from tests.support.datasets import json_array, jsonl, msg, record, write

REPO = Path(__file__).resolve().parents[2]


def validate(tmp_path: Path, content: str | bytes, name: str = "d.jsonl", fmt: str | None = None) -> ValidationReport:
    return open_dataset(write(tmp_path, name, content), fmt).validate()


def errors(report: ValidationReport) -> list[tuple[str, str | None, str]]:
    return [(issue.location, issue.field, issue.message) for issue in report.errors]


# ---- duplicate keys ---------------------------------------------------------------------------------------------


def test_a_repeated_key_in_a_json_line_is_an_error_naming_the_line_and_the_key(tmp_path: Path) -> None:
    line = '{"prompt": "a", "chosen": "c", "prompt": "b", "rejected": "r"}'
    report = validate(tmp_path, f"{jsonl([record()])}{line}\n{jsonl([record('x', 'y', 'z')])}")
    [(location, field, message)] = errors(report)
    assert (location, field) == ("line 2", "prompt")
    assert "duplicate key" in message
    assert report.record_count == 3


def test_a_repeated_key_in_a_json_array_record_is_an_error_and_reading_goes_on(tmp_path: Path) -> None:
    repeated = '{"prompt": "a", "chosen": "c", "rejected": "r", "chosen": "d"}'
    content = f"[{json.dumps(record())},\n{repeated},\n{json.dumps(record('x', 'y', 'z'))}]"
    report = validate(tmp_path, content, "d.json")
    assert [(location, field) for location, field, _ in errors(report)] == [("record 1", "chosen")]
    assert report.record_count == 3
    fixed = write(tmp_path, "fixed.json", content.replace(repeated, json.dumps(record("a", "c", "r"))))
    assert len(open_dataset(fixed).load()) == 3


def test_a_key_repeated_through_an_escape_is_caught_too(tmp_path: Path) -> None:
    line = '{"prompt": "a", "pr\\u006fmpt": "b", "chosen": "c", "rejected": "r"}\n'
    assert [(loc, field) for loc, field, _ in errors(validate(tmp_path, line))] == [("line 1", "prompt")]
    array = '[{"chosen": "c", "rejected": "r", "prompt": "caf\xc3\xa9", "pr\\u006fmpt": "\xc3\xa9"}]'
    assert [(loc, field) for loc, field, _ in errors(validate(tmp_path, array.encode("latin-1"), "d.json"))] == [
        ("record 0", "prompt")
    ]


@pytest.mark.parametrize("container", ["jsonl", "json"])
def test_a_repeated_key_inside_a_message_names_the_message(tmp_path: Path, container: str) -> None:
    rec = {"prompt": [msg("user", "q")], "chosen": [msg("assistant", "a")], "rejected": [msg("assistant", "b")]}
    text = json.dumps(rec).replace('"role": "assistant", "content": "a"', '"role": "assistant", "role": "user"')
    content = text + "\n" if container == "jsonl" else f"[{text}]"
    report = validate(tmp_path, content, f"c.{container}", "conversational")
    [(location, field, message)] = errors(report)
    assert location == ("line 1" if container == "jsonl" else "record 0")
    assert field == "chosen[0].role"
    assert "duplicate key" in message


# ---- chosen and rejected that only look different ---------------------------------------------------------------

INVISIBLE = {
    "NFC vs NFD": (unicodedata.normalize("NFC", "Café crème"), unicodedata.normalize("NFD", "Café crème")),
    "zero width space": ("Hello there", "Hello\u200b there"),
    "zero width non-joiner": ("Hello there", "Hel\u200clo there"),
    "zero width joiner": ("Hello there", "Hello there\u200d"),
    "word joiner": ("Hello there", "\u2060Hello there"),
    "byte order mark": ("Hello there", "Hello\ufeff there"),
    "both at once": ("naïve answer", unicodedata.normalize("NFD", "naïve\u200b answer")),
}


@pytest.mark.parametrize(("chosen", "rejected"), INVISIBLE.values(), ids=INVISIBLE.keys())
def test_chosen_and_rejected_differing_only_invisibly_are_flagged_like_identical_ones(
    tmp_path: Path, chosen: str, rejected: str
) -> None:
    identical = validate(tmp_path, jsonl([record("p", chosen, chosen)]))
    invisible = validate(tmp_path, jsonl([record("p", chosen, rejected)]))
    [(location, field, message)] = errors(invisible)
    assert (location, field) == errors(identical)[0][:2] == ("line 1", "rejected")
    assert message.startswith("must differ from 'chosen'")
    assert "Unicode normalisation or zero-width" in message


@pytest.mark.parametrize(("chosen", "rejected"), list(INVISIBLE.values())[:3])
def test_messages_differing_only_invisibly_are_flagged_too(tmp_path: Path, chosen: str, rejected: str) -> None:
    rec = {"prompt": [msg("user", "q")], "chosen": [msg("assistant", chosen)], "rejected": [msg("assistant", rejected)]}
    [(location, field, message)] = errors(validate(tmp_path, json_array([rec]), "c.json"))
    assert (location, field) == ("record 0", "rejected")
    assert message.startswith("must differ from 'chosen'")


def test_texts_that_really_differ_are_not_flagged(tmp_path: Path) -> None:
    pairs = [("Café", "Cafe"), ("a\u200bb", "a\u200bc"), ("x" * 70 + "é", "x" * 70 + "è"), ("日本", "日本語")]
    pairs += [("x² + 1", "x2 + 1"), ("Ｈｅｌｌｏ", "Hello")]  # compatibility forms are different text
    report = validate(tmp_path, jsonl([record(f"p{i}", a, b) for i, (a, b) in enumerate(pairs)]))
    assert report.ok, report.format_text()


# ---- huge strings: linear time, one size limit for both containers ---------------------------------------------


def long_string_record(size: int) -> str:
    return json.dumps(record(chosen="x" * size))


def seconds_to_validate(path: Path) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        open_dataset(path).validate()
        best = min(best, time.perf_counter() - start)
    return best


def test_a_long_string_in_a_json_array_takes_linear_time(tmp_path: Path) -> None:
    small = write(tmp_path, "small.json", f"[{long_string_record(2_000_000)}]")
    large = write(tmp_path, "large.json", f"[{long_string_record(14_000_000)}]")
    ratio = seconds_to_validate(large) / seconds_to_validate(small)
    assert ratio < 20, f"7 times the size took {ratio:.1f} times as long"  # linear: 7; quadratic: 49


@pytest.mark.parametrize("container", ["json", "jsonl"])
def test_a_record_over_the_size_limit_is_reported_alike_in_both_containers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str
) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 100_000)
    rows = [json.dumps(record()), long_string_record(150_000), json.dumps(record("x", "y", "z"))]
    content = "[" + ",\n".join(rows) + "]" if container == "json" else "\n".join(rows) + "\n"
    [(location, field, message)] = errors(validate(tmp_path, content, f"d.{container}"))
    assert location == ("record 1" if container == "json" else "line 2")
    assert field is None
    assert message.startswith("record is longer than 97.7 KiB, the limit; ")


def test_the_default_size_limit_refuses_a_huge_string_in_an_array(tmp_path: Path) -> None:
    size = 9_000_000  # just over 8 MiB
    report = validate(tmp_path, f"[{json.dumps(record())}, {long_string_record(size)}]", "d.json")
    [(location, _, message)] = errors(report)
    assert location == "record 1"
    assert "record is longer than 8 MiB, the limit" in message


# ---- UTF-16 and UTF-32, with and without a byte order mark --------------------------------------------------------


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("layout", [json_array, jsonl])
def test_a_wide_encoding_without_a_byte_order_mark_is_named(tmp_path: Path, encoding: str, layout) -> None:
    report = validate(tmp_path, layout([record()]).encode(encoding), "d.data")
    [(location, field, message)] = errors(report)
    assert (location, field) == ("file", None)
    name, order = encoding.upper().rsplit("-", 1)
    assert f"{name} ({'little' if order == 'LE' else 'big'}-endian)" in message and "must be UTF-8" in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-16-be", "utf-32-be"])
def test_a_byte_order_mark_names_its_encoding(tmp_path: Path, encoding: str) -> None:
    name = encoding.upper()[:6]
    content = json_array([record()]).encode(encoding)
    if encoding.endswith("-be"):  # Python writes a mark only for the native order
        content = "\ufeff".encode(encoding) + content
    [(location, field, message)] = errors(validate(tmp_path, content, "d.json"))
    assert (location, field) == ("file", None)
    assert f"is {name} encoded" in message and "use UTF-8" in message


# ---- memory that does not grow with the record count --------------------------------------------------------------

MEMORY_PROBE = """
import sys
from dpo_lib.data import stats
from dpo_lib.data.validation import DatasetScan

def rss_mib(field="VmRSS:"):  # not getrusage: a child's ru_maxrss starts at its parent's RSS
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

stats.DUPLICATE_CHECK_RECORDS = int(sys.argv[2])  # small, so that a few million records are well past it
scan = DatasetScan(sys.argv[1])
for count, _ in enumerate(scan.pairs(), 1):
    if count == int(sys.argv[3]):
        at_checkpoint = rss_mib()
at_end = rss_mib()
report, _ = scan.finish()
print(at_checkpoint, at_end, rss_mib("VmHWM:"), report.record_count)
"""


def test_memory_stays_flat_as_records_grow(tmp_path: Path) -> None:
    count, cap, checkpoint = 500_000, 50_000, 150_000
    path = tmp_path / "tiny.jsonl"
    path.write_bytes(b"".join(b'{"prompt": "p%d", "chosen": "a", "rejected": "b"}\n' % i for i in range(count)))
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, str(path), str(cap), str(checkpoint)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    at_checkpoint, at_end, peak, records_read = map(float, result.stdout.split())
    assert records_read == count
    # The old tracker kept 40 bytes per record (14 MB more for the last 350,000), then sorted them.
    assert at_end - at_checkpoint < 4, f"RSS grew from {at_checkpoint:.1f} to {at_end:.1f} MiB"
    assert peak < 120, f"peak RSS {peak:.1f} MiB"
