"""``python -m dpo_lib validate``: exit 0 valid, 1 invalid, 2 unreadable; clear messages, no tracebacks."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dpo_lib import cli
from dpo_lib.data import validate_cli
from tests.conftest import REPO
from tests.support.datasets import expected_cuts, json_array, jsonl, record, write


def validate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dpo_lib", "validate", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """The same command without a new interpreter; an escaping exception would fail the test."""
    code = cli.main(["validate", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_valid_file_exits_0_with_a_summary(tmp_path: Path) -> None:
    result = validate(write(tmp_path, "d.jsonl", jsonl([record("a", "b", "c"), record()])))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid (jsonl, 2 records): 0 errors, 0 warnings" in result.stdout
    assert "p50 / p90 / p99 / max" in result.stdout


def test_warnings_alone_still_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_in_process(capsys, write(tmp_path, "d.jsonl", jsonl([record(), record()])))
    assert code == 0
    assert "warning: line 2: duplicate of line 1" in out


def test_an_invalid_file_exits_1_listing_each_error_on_its_own_line(tmp_path: Path) -> None:
    rows = [record(), record(chosen=""), *[record(rejected=7)] * 60]
    result = validate(write(tmp_path, "d.jsonl", jsonl(rows)))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "INVALID" in lines[0]
    assert "line 2: field 'chosen': must be a non-empty string" in lines
    assert "line 3: field 'rejected': must be a string, found number" in lines
    assert "... and 11 more errors" in lines


def test_missing_files_and_unknown_formats_exit_2(tmp_path: Path) -> None:
    missing = validate(tmp_path / "nope.jsonl")
    assert missing.returncode == 2
    assert "No such file" in missing.stderr and "Traceback" not in missing.stderr

    unknown = validate(write(tmp_path, "d.jsonl", jsonl([record()])), "--format", "csv")
    assert unknown.returncode == 2
    assert "unknown format 'csv'" in unknown.stderr


def test_a_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_in_process(capsys, tmp_path)
    assert code == 2
    assert "cannot read" in err


def test_format_flag_forces_the_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "d.json", json_array([record("q"), record()]))
    assert run_in_process(capsys, path, "--format", "json")[0] == 0
    code, out, _ = run_in_process(capsys, path, "--format", "jsonl")
    assert code == 1
    assert "format 'jsonl' needs one JSON object per line" in out


def test_json_output_is_one_object_with_the_report_and_stats(tmp_path: Path) -> None:
    result = validate(write(tmp_path, "d.json", json_array([record(), record(prompt="")])), "--json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert {"ok", "format", "record_count", "errors", "warnings", "error_count", "warning_count", "stats"} <= set(data)
    assert (data["ok"], data["format"], data["record_count"], data["error_count"]) == (False, "json", 2, 1)
    assert data["errors"][0] == {
        "location": "record 1",
        "field": "prompt",
        "message": "must be a non-empty string",
        "severity": "error",
    }
    assert set(data["stats"]["lengths"]) == {"prompt", "chosen", "rejected"}
    assert set(data["stats"]["lengths"]["chosen"]) == {"p50", "p90", "p99", "max"}


def test_json_output_for_unreadable_input_is_still_one_object(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_in_process(capsys, tmp_path / "nope.json", "--json")
    assert code == 2
    assert json.loads(out)["ok"] is False


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(bytes(range(256)) * 50, id="binary-garbage"),
        pytest.param(b'[{"prompt": "p", "chosen": "c", "rej', id="truncated-array"),
        pytest.param(b'{"prompt": "p", "chosen": "c", "rej', id="truncated-line"),
        pytest.param(b"[" * 200_000, id="deep-array"),
        pytest.param(b'{"a": ' + b"[" * 200_000 + b"\n", id="deep-line"),
        pytest.param(b"12345", id="top-level-number"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"prompt": 1' + b"0" * 10_000 + b"}\n", id="huge-number"),
        pytest.param(b'\xff\xfe{\x00"\x00', id="utf16"),
    ],
)
def test_malformed_input_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    code, out, err = run_in_process(capsys, write(tmp_path, "bad.data", content))
    assert code == 1, err
    assert "INVALID" in out
    assert len(out.splitlines()[1]) > 20  # the first error explains itself


def test_binary_garbage_in_a_real_process_gives_no_traceback(tmp_path: Path) -> None:
    result = validate(write(tmp_path, "bad.bin", bytes(range(256)) * 50))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "file: top level must be a JSON array" in result.stdout


def test_a_single_pair_exits_1_as_too_few_to_train_and_hold_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_in_process(capsys, write(tmp_path, "d.jsonl", jsonl([record()])))
    assert code == 1  # stage refuses it (no held-out pair): the CLI must not call it valid
    assert "file: dataset holds 1 preference pair(s); a run needs at least 2" in out


def test_huge_strings_are_read_and_flagged_as_long(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_in_process(
        capsys, write(tmp_path, "d.json", json_array([record("q"), record(chosen="x" * 3_000_000)]))
    )
    assert code == 0
    assert "unusually long: 3000000 characters" in out


def test_file_uris_are_read_as_local_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "d.jsonl", jsonl([record("q"), record()]))
    assert run_in_process(capsys, path.as_uri())[0] == 0


def test_unsupported_uri_schemes_exit_2_with_the_storage_message(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_in_process(capsys, "s3://bucket/d.jsonl")
    assert code == 2
    assert "storage error: unsupported scheme 's3'" in err


class FakeBackend:
    """Stands in for a remote storage backend: serves one object, records being closed."""

    def __init__(self, data: bytes, error: Exception | None = None) -> None:
        self.data, self.error, self.closed = data, error, False

    def open_read(self, uri: str) -> io.BytesIO:
        if self.error is not None:
            raise self.error
        return io.BytesIO(self.data)

    def close(self) -> None:
        self.closed = True


def test_remote_uris_are_streamed_through_storage_open_read(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dpo_lib.storage

    backend = FakeBackend(jsonl([record("q"), record()]).encode())
    monkeypatch.setattr(dpo_lib.storage, "get_storage", lambda uri: backend)

    assert cli.main(["validate", "gs://bucket/d.jsonl", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "gs://bucket/d.jsonl"
    assert backend.closed


def test_storage_errors_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import dpo_lib.storage

    error = dpo_lib.storage.ObjectNotFound("gs://bucket/d.jsonl", "no such object")
    monkeypatch.setattr(dpo_lib.storage, "get_storage", lambda uri: FakeBackend(b"", error))

    assert cli.main(["validate", "gs://bucket/d.jsonl"]) == validate_cli.EXIT_UNREADABLE
    assert "storage error: no such object" in capsys.readouterr().err


def test_the_validate_command_never_imports_torch_or_transformers() -> None:
    code = (
        "import sys, dpo_lib.data.validate_cli, dpo_lib.data.dataset; "
        "sys.exit(sorted({'torch', 'transformers'} & set(sys.modules)) or 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_a_fifo_exits_2_at_once_with_a_one_line_reason(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    result = validate(fifo)  # with no writer, open() would wait forever; validate() has a 60 s timeout
    assert result.returncode == 2
    assert result.stderr == f"error: {fifo}: cannot read: is a FIFO (named pipe), not a regular file\n"


def test_a_device_exits_2_with_a_one_line_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_in_process(capsys, "/dev/null")
    assert code == 2
    assert err == "error: /dev/null: cannot read: is a character device, not a regular file\n"


HOSTILE = {
    "utf-16 without bom": (json_array([record()]).encode("utf-16-le"), "looks UTF-16 (little-endian) encoded"),
    "duplicate key": (b'{"prompt": "a", "prompt": "b", "chosen": "c", "rejected": "r"}\n', "duplicate key"),
    "zero-width difference": (jsonl([record("p", "same", "same\u200b")]).encode(), "must differ from 'chosen'"),
    "huge string in an array": (b'[{"prompt": "' + b"x" * 9_000_000 + b'"}]', "longer than 8 MiB"),
    "deep array": (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
}


@pytest.mark.parametrize(("content", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_files_exit_1_with_the_reason_and_no_traceback(tmp_path: Path, content: bytes, reason: str) -> None:
    result = validate(write(tmp_path, "hostile.data", content))
    assert result.returncode == 1, result.stderr
    assert reason in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's tokenizer alone: enough for --model, without building weights."""
    from dpo_lib.tiny_model import build_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer().save_pretrained(folder)
    return folder


def test_with_a_model_the_stats_count_the_pairs_truncation_cuts(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [record(f"Question {i}?", "An answer.", "No.") for i in range(5)]
    rows += [record("Say hi. " * 5000, "Hi!", "No."), record("Be brief.", "Yes. " * 300, "No.")]
    rows += [record("Tell a story. " * 40, "Once upon a time.", "No.")]
    path = write(tmp_path, "d.jsonl", jsonl(rows))
    cuts = expected_cuts(tokenizer_dir, rows, 64, 32)
    assert sum(1 for cut in cuts if cut) == 3  # the dataset does what it is meant to

    code, out, _ = run_in_process(
        capsys, path, "--model", tokenizer_dir, "--max-length", "64", "--max-prompt-length", "32", "--json"
    )
    assert code == 0
    truncation = json.loads(out)["truncation"]
    assert (truncation["pair_count"], truncation["truncated_pairs"]) == (8, 3)
    assert (truncation["prompt_truncated_pairs"], truncation["response_truncated_pairs"]) == (2, 1)
    assert truncation["tokens_dropped"] == sum(cuts)
    assert truncation["max_tokens_dropped"] == max(cuts)
    assert truncation["lengths"]["prompt"]["max"] > 5000

    code, out, _ = run_in_process(
        capsys, path, "--model", tokenizer_dir, "--max-length", "64", "--max-prompt-length", "32"
    )
    assert code == 0
    summary = "truncation at max_length 64 (max_prompt_length 32): 3 of 8 pairs (37.50%) lose tokens"
    assert summary in out
    assert f"at most {max(cuts):,}" in out


def test_without_a_model_nothing_is_tokenized_and_json_has_no_truncation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_in_process(capsys, write(tmp_path, "d.jsonl", jsonl([record(), record("Bye.")])), "--json")
    assert code == 0 and "truncation" not in json.loads(out)


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--max-length", "64"], "--max-length needs --model"),
        (["--model", "no-such-preset"], "--model no-such-preset: neither a folder nor a preset"),
        (["--model", "tiny", "--max-length", "32", "--max-prompt-length", "40"], "must be smaller than max_length"),
    ],
)
def test_bad_truncation_options_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], reason: str
) -> None:
    code, _, err = run_in_process(capsys, write(tmp_path, "d.jsonl", jsonl([record()])), *args)
    assert code == 2 and reason in err
