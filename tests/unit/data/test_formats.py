"""Each format loads into the right PreferencePairs; formats are detected or forced."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from dpo_lib.data.dataset import PreferenceDataset, open_dataset
from dpo_lib.data.interface import DatasetError, PreferenceDatasetInterface
from dpo_lib.data.pair import PreferencePair
from tests.support.datasets import hh_dialogue, json_array, jsonl, msg, record, write


def test_json_array_records_load_as_string_pairs(tmp_path: Path) -> None:
    path = write(tmp_path, "d.json", json_array([record("p1", "c1", "r1"), record("p2", "c2", "r2")]))
    pairs = open_dataset(path).load()
    assert pairs == [PreferencePair("p1", "c1", "r1"), PreferencePair("p2", "c2", "r2")]


def test_json_lines_records_load_in_order_skipping_blank_lines(tmp_path: Path) -> None:
    text = jsonl([record("p1", "c1", "r1")]) + "\n  \n" + jsonl([record("p2", "c2", "r2")])
    pairs = open_dataset(write(tmp_path, "d.jsonl", text)).load()
    assert pairs == [PreferencePair("p1", "c1", "r1"), PreferencePair("p2", "c2", "r2")]


def test_hh_prompt_is_the_chosen_dialogue_through_its_last_assistant_marker(tmp_path: Path) -> None:
    chosen = hh_dialogue("Hi", "Hello.", "Tell me a joke", "Why did the chicken...")
    rejected = hh_dialogue("Hi", "Hello.", "Tell me a joke", "No.")
    path = write(tmp_path, "hh.jsonl", jsonl([{"chosen": chosen, "rejected": rejected}]))

    [pair] = open_dataset(path).load()

    assert pair.prompt == "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: Tell me a joke\n\nAssistant:"
    assert pair.chosen == " Why did the chicken..."
    assert pair.rejected == " No."


def test_hh_records_in_a_json_array_load_too(tmp_path: Path) -> None:
    rec = {"chosen": hh_dialogue("Q", "good"), "rejected": hh_dialogue("Q", "bad")}
    [pair] = open_dataset(write(tmp_path, "hh.json", json_array([rec]))).load()
    assert pair == PreferencePair("\n\nHuman: Q\n\nAssistant:", " good", " bad")


def test_hh_rejected_dialogue_with_another_prompt_is_an_error_for_that_record(tmp_path: Path) -> None:
    good = {"chosen": hh_dialogue("Q", "good"), "rejected": hh_dialogue("Q", "bad")}
    other = {"chosen": hh_dialogue("Q", "good"), "rejected": hh_dialogue("Another question", "bad")}
    report = open_dataset(write(tmp_path, "hh.jsonl", jsonl([good, other]))).validate()

    assert report.format == "hh"
    [error] = report.errors
    assert (error.location, error.field) == ("line 2", "rejected")
    assert "prompt" in error.message


def test_hh_dialogue_without_a_reply_after_the_last_assistant_marker_is_an_error(tmp_path: Path) -> None:
    rec = {"chosen": hh_dialogue("Q", ""), "rejected": hh_dialogue("Q", "bad")}
    report = open_dataset(write(tmp_path, "hh.jsonl", jsonl([rec]))).validate()
    assert [(e.location, e.field) for e in report.errors] == [("line 1", "chosen")]
    assert "no reply" in report.errors[0].message


def test_conversational_records_with_an_explicit_prompt_load_as_message_lists(tmp_path: Path) -> None:
    rec = {
        "prompt": [msg("system", "Be brief."), msg("user", "2+2?")],
        "chosen": [msg("assistant", "4")],
        "rejected": [{"role": "assistant", "content": "5", "name": "dropped"}],
    }
    [pair] = open_dataset(write(tmp_path, "c.jsonl", jsonl([rec]))).load()

    assert pair.is_conversational
    assert pair.prompt == [msg("system", "Be brief."), msg("user", "2+2?")]
    assert pair.chosen == [msg("assistant", "4")]
    assert pair.rejected == [msg("assistant", "5")]  # normalised to role and content


def test_conversational_implicit_prompt_is_the_shared_leading_messages(tmp_path: Path) -> None:
    shared = [msg("user", "Hi"), msg("assistant", "Hello"), msg("user", "2+2?")]
    rec = {"chosen": [*shared, msg("assistant", "4")], "rejected": [*shared, msg("assistant", "5")]}
    [pair] = open_dataset(write(tmp_path, "c.json", json_array([rec]))).load()
    assert pair == PreferencePair(shared, [msg("assistant", "4")], [msg("assistant", "5")])


def test_conversations_diverging_at_a_user_message_are_an_error(tmp_path: Path) -> None:
    rec = {
        "chosen": [msg("user", "Hi"), msg("assistant", "Hello")],
        "rejected": [msg("user", "Bye"), msg("assistant", "Hello")],
    }
    report = open_dataset(write(tmp_path, "c.jsonl", jsonl([rec]))).validate()
    assert [(e.location, e.field) for e in report.errors] == [("line 1", "rejected")]
    assert "no leading messages" in report.errors[0].message


def test_bad_roles_and_missing_content_name_the_message(tmp_path: Path) -> None:
    rec = {
        "prompt": [{"role": "wizard", "content": "hi"}],
        "chosen": [{"role": "assistant"}],
        "rejected": [msg("assistant", "x"), "not a message"],
    }
    report = open_dataset(write(tmp_path, "c.jsonl", jsonl([rec]))).validate()
    found = {(e.location, e.field) for e in report.errors}
    assert found == {
        ("line 1", "prompt[0].role"),
        ("line 1", "chosen[0].content"),
        ("line 1", "rejected[1]"),
    }


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.json", json_array([record()]), "json"),
        ("a.jsonl", jsonl([record()]), "jsonl"),
        ("a.txt", jsonl([{"chosen": hh_dialogue("Q", "a"), "rejected": hh_dialogue("Q", "b")}]), "hh"),
        ("a.data", json_array([{"chosen": [msg("user", "q"), msg("assistant", "a")],
                                "rejected": [msg("user", "q"), msg("assistant", "b")]}]), "conversational"),
    ],
)  # fmt: skip
def test_format_is_detected_from_the_data_not_the_file_name(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    dataset = open_dataset(write(tmp_path, name, content))
    report = dataset.validate()
    assert report.ok, report.format_text()
    assert report.format == expected
    assert dataset.format == expected


def test_forced_format_wins_over_detection(tmp_path: Path) -> None:
    # A "prompt" key makes detection read string records; forcing hh splits the dialogue instead.
    rec = {"prompt": "ignored", "chosen": hh_dialogue("Q", "a"), "rejected": hh_dialogue("Q", "b")}
    path = write(tmp_path, "d.jsonl", jsonl([rec]))

    assert open_dataset(path).load()[0].prompt == "ignored"
    assert open_dataset(path, "hh").load()[0] == PreferencePair("\n\nHuman: Q\n\nAssistant:", " a", " b")


def test_forcing_json_on_json_lines_is_an_error_that_suggests_jsonl(tmp_path: Path) -> None:
    report = open_dataset(write(tmp_path, "d.jsonl", jsonl([record()])), "json").validate()
    assert not report.ok
    assert report.errors[0].location == "file"
    assert "jsonl" in report.errors[0].message


def test_forcing_jsonl_on_a_json_array_is_an_error_that_suggests_json(tmp_path: Path) -> None:
    report = open_dataset(write(tmp_path, "d.json", json_array([record()])), "jsonl").validate()
    assert not report.ok
    assert "'json'" in report.errors[0].message


@pytest.mark.parametrize("fmt", [None, "json", "jsonl", "hh", "conversational"])
def test_open_dataset_returns_a_dataset_of_the_forced_format(tmp_path: Path, fmt: str | None) -> None:
    dataset = open_dataset(tmp_path / "unused.json", fmt)
    assert type(dataset) is PreferenceDataset and dataset.format == fmt
    assert isinstance(dataset, PreferenceDatasetInterface)


def test_open_dataset_rejects_an_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset format 'csv'"):
        open_dataset(tmp_path / "d.csv", "csv")


def test_a_callable_source_is_reopened_for_every_pass() -> None:
    data = jsonl([record("p", "c", "r")]).encode()
    opened = []

    def open_stream() -> io.BytesIO:
        opened.append(1)
        return io.BytesIO(data)

    dataset = open_dataset(open_stream, name="mem://d.jsonl")
    assert dataset.load() == [PreferencePair("p", "c", "r")]
    assert list(dataset.iter_pairs()) == [PreferencePair("p", "c", "r")]
    assert len(opened) == 2
    assert dataset.validate().source == "mem://d.jsonl"


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "bom.json", b"\xef\xbb\xbf" + json.dumps([record()]).encode())
    assert open_dataset(path).load() == [PreferencePair("Say hi.", "Hi!", "No.")]


def test_load_raises_a_dataset_error_naming_the_first_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl([record(), record(chosen=""), {"prompt": "p"}]))
    with pytest.raises(DatasetError) as caught:
        open_dataset(path).load()
    text = str(caught.value)
    assert "line 2: field 'chosen': must be a non-empty string" in text
    assert "line 3: field 'chosen': required field is missing" in text
    assert caught.value.error_count == 3


def test_iter_pairs_yields_the_valid_pairs_before_the_first_error_then_raises(tmp_path: Path) -> None:
    path = write(tmp_path, "d.jsonl", jsonl([record("a", "b", "c"), record(chosen=5), record()]))
    seen = []
    with pytest.raises(DatasetError, match="line 2: field 'chosen'"):
        for pair in open_dataset(path).iter_pairs():
            seen.append(pair)
    assert seen == [PreferencePair("a", "b", "c")]


def test_iter_pairs_on_an_empty_dataset_raises(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="empty"):
        list(open_dataset(write(tmp_path, "d.json", "[]")).iter_pairs())
