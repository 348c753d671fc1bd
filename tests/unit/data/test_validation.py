"""Validation names the record (or line) and field of every problem, caps the list, and
reports duplicates and length outliers as warnings."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import pytest

from dpo_lib.data import records, stats
from dpo_lib.data.dataset import open_dataset
from dpo_lib.data.interface import DatasetError
from dpo_lib.data.issues import MAX_KEPT_ISSUES
from dpo_lib.data.validation import ValidationReport
from tests.support.datasets import json_array, jsonl, record, write

GOOD = json.dumps(record())


def validate_bytes(tmp_path: Path, content: bytes | str, name: str = "d.jsonl", fmt: str | None = None):
    return open_dataset(write(tmp_path, name, content), fmt).validate()


def only_error(report: ValidationReport) -> tuple[str, str | None, str]:
    assert report.error_count == 1, report.format_text()
    error = report.errors[0]
    return error.location, error.field, error.message


@pytest.mark.parametrize(
    ("bad_line", "field", "message"),
    [
        ('{"prompt": "p", "chosen": "c"}', "rejected", "required field is missing"),
        ('{"prompt": "p", "chosen": 3, "rejected": "r"}', "chosen", "must be a string, found number"),
        ('{"prompt": "p", "chosen": null, "rejected": "r"}', "chosen", "must be a string, found null"),
        ('{"prompt": " \\n\\t", "chosen": "c", "rejected": "r"}', "prompt", "must be a non-empty string"),
        ('{"prompt": "p", "chosen": "", "rejected": "r"}', "chosen", "must be a non-empty string"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same "}', "rejected", "must differ from 'chosen'"),
        ('{"prompt": "p\\ud800", "chosen": "c", "rejected": "r"}', "prompt", "unpaired surrogate"),
    ],
)
def test_record_errors_name_the_line_and_the_field(tmp_path: Path, bad_line: str, field: str, message: str) -> None:
    report = validate_bytes(tmp_path, f"{GOOD}\n{bad_line}\n{GOOD}\n")
    location, got_field, got_message = only_error(report)
    assert (location, got_field) == ("line 2", field)
    assert message in got_message
    assert report.record_count == 3


def test_records_of_a_json_array_are_named_by_index(tmp_path: Path) -> None:
    report = validate_bytes(tmp_path, json_array([record(), record(), {"chosen": "c", "rejected": "r"}]), "d.json")
    assert only_error(report)[:2] == ("record 2", "prompt")


def test_invalid_utf8_in_json_lines_reports_the_byte_and_goes_on(tmp_path: Path) -> None:
    content = f"{GOOD}\n".encode() + b'{"prompt": "caf\xe9"}\n' + b'{"prompt": 1, "chosen": "c", "rejected": "r"}\n'
    report = validate_bytes(tmp_path, content)
    first, second = report.errors
    assert (first.location, first.field) == ("line 2", None)
    assert "invalid UTF-8 at byte 16 (0xe9)" in first.message
    assert (second.location, second.field) == ("line 3", "prompt")


def test_invalid_utf8_in_a_json_array_reports_line_and_byte(tmp_path: Path) -> None:
    content = b'[\n{"prompt": "p", "chosen": "c", "rejected": "r"},\n{"prompt": "\xff"}\n]\n'
    location, field, message = only_error(validate_bytes(tmp_path, content, "d.json"))
    assert (location, field) == ("record 1", None)
    assert "invalid UTF-8 at line 3, byte 13 (0xff)" in message


def test_a_malformed_json_line_is_reported_with_its_column_and_later_lines_still_checked(tmp_path: Path) -> None:
    report = validate_bytes(tmp_path, f'{GOOD}\n{{"prompt": "p",, }}\n{{"prompt": "p"}}\n')
    first = report.errors[0]
    assert (first.location, first.field) == ("line 2", None)
    assert first.message.startswith("malformed JSON at column 16")
    assert {e.location for e in report.errors[1:]} == {"line 3"}


def test_a_pretty_printed_object_in_json_lines_gets_a_hint(tmp_path: Path) -> None:
    report = validate_bytes(tmp_path, '{\n  "prompt": "p"\n}\n')
    assert report.errors[0].location == "line 1"
    assert "the line ends before the JSON value does" in report.errors[0].message


def test_malformed_json_in_an_array_names_the_record_and_line(tmp_path: Path) -> None:
    content = f"[\n{GOOD},\n{GOOD}\n{GOOD}\n]\n"  # missing comma after record 1
    location, field, message = only_error(validate_bytes(tmp_path, content, "d.json"))
    assert (location, field) == ("record 2", None)
    assert message.startswith("malformed JSON at line 4:")


def test_a_truncated_json_array_is_reported_as_such(tmp_path: Path) -> None:
    content = f"[{GOOD}, {GOOD[:20]}"
    location, _, message = only_error(validate_bytes(tmp_path, content, "d.json"))
    assert location == "record 1"
    assert "unexpected end of file" in message and "truncated" in message
    location, _, message = only_error(validate_bytes(tmp_path, f'[{GOOD}, {{"prompt": "p', "d.json"))
    assert location == "record 1"
    assert "never ends" in message and "truncated" in message


def test_trailing_garbage_after_the_array_is_a_file_error(tmp_path: Path) -> None:
    location, _, message = only_error(validate_bytes(tmp_path, f"[{GOOD}] [{GOOD}]", "d.json"))
    assert location == "file"
    assert "trailing garbage" in message


@pytest.mark.parametrize("content", [b"", b"  \n\n", b"[]", b"[\n]\n", b"\xef\xbb\xbf"])
def test_an_empty_dataset_is_an_error(tmp_path: Path, content: bytes) -> None:
    report = validate_bytes(tmp_path, content)
    assert only_error(report) == ("file", None, "dataset is empty: no records found")
    assert report.record_count == 0


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"42\n", "a number"),
        (b'"just a string"', "a string"),
        (b"null", "null"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "byte 0x89"),
        (b"\x1f\x8b\x08\x00", "byte 0x1f"),
        (b"hello", "'h'"),
    ],
)
def test_a_top_level_that_is_not_an_array_or_objects_is_an_error(tmp_path: Path, content: bytes, found: str) -> None:
    location, field, message = only_error(validate_bytes(tmp_path, content))
    assert (location, field) == ("file", None)
    assert "top level must be a JSON array" in message and found in message


def test_array_items_and_lines_that_are_not_objects_are_errors(tmp_path: Path) -> None:
    array = validate_bytes(tmp_path, f'[{GOOD}, 7, "x", [1]]', "d.json")
    assert [(e.location, e.message) for e in array.errors] == [
        ("record 1", "must be a JSON object, found number"),
        ("record 2", "must be a JSON object, found string"),
        ("record 3", "must be a JSON object, found array"),
    ]
    lines = validate_bytes(tmp_path, f"{GOOD}\n7\n")
    assert only_error(lines)[0] == "line 2"


def test_utf16_files_are_told_to_be_utf8(tmp_path: Path) -> None:
    content = json.dumps([record()]).encode("utf-16")
    assert "UTF-16" in only_error(validate_bytes(tmp_path, content, "d.json"))[2]


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    array = validate_bytes(tmp_path, f'[{GOOD}, {{"prompt": {deep}}}]', "d.json")
    assert only_error(array)[0] == "record 1"
    assert "nested too deeply" in array.errors[0].message
    lines = validate_bytes(tmp_path, f'{GOOD}\n{{"prompt": {deep}}}\n{GOOD}\n')
    assert only_error(lines)[0] == "line 2"
    assert "nested too deeply" in lines.errors[0].message


def test_an_over_long_json_line_is_skipped_with_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 1000)
    long_line = json.dumps(record(prompt="x" * 5000))
    report = validate_bytes(tmp_path, f"{GOOD}\n{long_line}\n{GOOD}\n")
    assert only_error(report)[0] == "line 2"
    assert "longer than" in report.errors[0].message
    assert report.record_count == 3


def test_errors_are_capped_but_all_counted(tmp_path: Path) -> None:
    bad = 120
    report = validate_bytes(tmp_path, jsonl([record(chosen="")] * bad + [record()]))
    assert len(report.errors) == MAX_KEPT_ISSUES
    assert report.error_count == bad
    assert report.errors[-1].location == f"line {MAX_KEPT_ISSUES}"
    assert f"... and {bad - MAX_KEPT_ISSUES} more errors" in report.format_text()


def test_duplicates_are_warnings_naming_the_first_occurrence(tmp_path: Path) -> None:
    rows = [record("a", "b", "c"), record("x", "y", "z"), record("a", "b", "c"), record("a", "b", "c")]
    report = validate_bytes(tmp_path, json_array(rows), "d.json")
    assert report.ok
    assert [(w.location, w.severity) for w in report.warnings] == [("record 2", "warning"), ("record 3", "warning")]
    assert all("duplicate of record 0" in w.message for w in report.warnings)


def test_a_pair_with_the_same_prompt_but_other_answers_is_not_a_duplicate(tmp_path: Path) -> None:
    report = validate_bytes(tmp_path, jsonl([record("a", "b", "c"), record("a", "b", "d")]))
    assert report.warning_count == 0


def test_duplicate_warnings_are_capped_but_counted(tmp_path: Path) -> None:
    report = validate_bytes(tmp_path, jsonl([record()] * 80))
    assert report.ok
    assert len(report.warnings) == MAX_KEPT_ISSUES
    assert report.warning_count == 79


def test_a_length_far_above_the_99th_percentile_is_a_warning(tmp_path: Path) -> None:
    rows = [record(f"prompt {i:03d}", "short answer", "other answer") for i in range(150)]
    rows[70] = record("prompt 070", "long " * 200, "other answer")
    report = validate_bytes(tmp_path, jsonl(rows))
    assert report.ok
    [warning] = report.warnings
    assert (warning.location, warning.field) == ("line 71", "chosen")
    assert "1000 characters" in warning.message


def test_small_datasets_only_warn_about_absolutely_long_texts(tmp_path: Path) -> None:
    rows = [record("p1", "short", "other"), record("p2", "a bit longer", "other"), record("p3", "x", "y")]
    assert validate_bytes(tmp_path, jsonl(rows)).warning_count == 0
    rows.append(record("p4", "z" * (stats.LONG_TEXT_CHARS + 1), "y"))
    report = validate_bytes(tmp_path, jsonl(rows))
    assert [(w.location, w.field) for w in report.warnings] == [("line 4", "chosen")]


def test_report_dict_is_json_serialisable_and_text_lists_each_error_on_a_line(tmp_path: Path) -> None:
    report = validate_bytes(tmp_path, jsonl([record(), record(chosen="  "), record()]))
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False
    assert data["format"] == "jsonl"
    assert data["record_count"] == 3
    assert (data["error_count"], data["warning_count"]) == (1, 1)
    assert data["errors"] == [
        {"location": "line 2", "field": "chosen", "message": "must be a non-empty string", "severity": "error"}
    ]
    lines = report.format_text().splitlines()
    assert "INVALID" in lines[0]
    assert "line 2: field 'chosen': must be a non-empty string" in lines
    assert "warning: line 3: duplicate of line 1 (same prompt, chosen and rejected)" in lines


def test_randomly_corrupted_files_always_yield_a_report(tmp_path: Path) -> None:
    """Any byte soup must end in a report (or DatasetError from load), never another exception."""
    base = (json_array([record(), record("é", "b", "c")]) + jsonl([record()])).encode()
    rng = random.Random(1234)
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data) + 1)
            choice = rng.random()
            if choice < 0.4:
                data[at:at] = bytes([rng.choice(b'[]{}",:\\\n \xff\xc3nt0')])
            elif choice < 0.7:
                del data[at : at + rng.randint(1, 5)]
            else:
                del data[at:]
        start = rng.choice([0, len(json_array([record(), record("é", "b", "c")]).encode())])
        payload = bytes(data[start:])
        fmt = rng.choice([None, "json", "jsonl", "hh", "conversational"])
        dataset = open_dataset(lambda payload=payload: io.BytesIO(payload), fmt)
        report = dataset.validate()
        assert report.ok == (report.error_count == 0)
        try:
            dataset.load()
        except DatasetError:
            assert not report.ok


def random_records(rng: random.Random, conversational: bool) -> list[Any]:
    """Mostly valid records, with the kinds of trouble the batch checks must notice among them."""
    texts = ["Hi!", "No.", "café", "日本語", "naïve", "x" * 70 + "é", " spaced ", "", "  ", "a\ud800b", "same"]
    odd = [None, 7, ["list"], {"obj": 1}]

    def text() -> Any:
        return rng.choice(texts) if rng.random() < 0.9 else rng.choice(odd)

    def message(role: str) -> Any:
        if rng.random() < 0.05:
            return rng.choice([{"role": role}, {"role": "robot", "content": "x"}, "text", {"role": role, "content": 5}])
        extra = {"name": "n"} if rng.random() < 0.05 else {}
        return {"role": role, "content": text(), **extra}

    rows = []
    for i in range(rng.randint(1, 40)):
        if conversational:
            row: dict[str, Any] = {"chosen": [message("assistant")], "rejected": [message("assistant")]}
            if rng.random() < 0.9:
                row["prompt"] = [message("user")]
            else:  # implicit prompt: the shared start of both conversations
                row["chosen"].insert(0, {"role": "user", "content": "q"})
                row["rejected"].insert(0, {"role": "user", "content": "q"})
        else:
            row = {"prompt": f"p{i % 5}", "chosen": text(), "rejected": text()}
        if rng.random() < 0.05:
            row.pop(rng.choice(list(row)))
        rows.append(row)
    return rows


@pytest.mark.parametrize("conversational", [False, True], ids=["text", "conversational"])
def test_batches_and_single_records_give_the_same_results(
    monkeypatch: pytest.MonkeyPatch, conversational: bool
) -> None:
    """Batches of valid records take a faster path; it must agree with the record-by-record one."""
    from dpo_lib.data import validation

    def outcome(data: bytes) -> tuple[Any, ...]:
        dataset = open_dataset(lambda: io.BytesIO(data))
        report, stats = dataset.validate(), dataset.get_stats()
        try:
            pairs: Any = open_dataset(lambda: io.BytesIO(data)).load()
        except DatasetError as exc:
            pairs = str(exc)
        return report.to_dict(), stats.to_dict(), pairs

    rng = random.Random(7)
    for _ in range(150):
        rows = random_records(rng, conversational)
        for data in (json_array(rows).encode("utf-8", "surrogatepass"), jsonl(rows).encode("utf-8", "surrogatepass")):
            batched = outcome(data)
            with monkeypatch.context() as patch:
                patch.setattr(validation, "BATCH_RECORDS", 1)
                assert outcome(data) == batched
