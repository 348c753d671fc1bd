"""A named corpus of hostile and broken input: datasets for the validate CLI and the stage task, requests
for the webhook's check and the validate task (``test_hostile_corpus.py`` runs them).

Every defect of issue 11 has a case here, beside the classics (random bytes, truncation, invalid UTF-8,
deep nesting, an empty file, a byte order mark, NUL). Each case says what must happen, so the tests
check the pipeline against this statement rather than against itself.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VALID, INVALID, UNREADABLE = 0, 1, 2  # the validate CLI's exit status
TOO_LONG = 9 * 1024 * 1024  # a string just over the 8 MiB a record may take
UNDER_THE_LIMIT = 7 * 1024 * 1024
MANY_RECORDS = 200_000


def pair(prompt: str = "p", chosen: str = "a good answer", rejected: str = "a bad answer") -> dict[str, str]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def pairs(count: int) -> list[dict[str, str]]:
    return [pair(f"question {i}", f"good answer {i}", f"bad answer {i}") for i in range(count)]


def array(records: list[Any]) -> bytes:
    return json.dumps(records, ensure_ascii=False).encode()


def lines(records: list[Any]) -> bytes:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()


def with_text(text: str, container: Callable[[list[Any]], bytes] = array) -> bytes:
    """Two pairs, the second with ``text`` as its chosen answer (JSON-escaped as it is written)."""
    return container([*pairs(1), pair(chosen=text)])


def flagged_pair(chosen: str, rejected: str) -> bytes:
    """Two pairs, the second's chosen and rejected as given."""
    return array([*pairs(1), pair(chosen=chosen, rejected=rejected)])


def write_many_records(path: Path) -> None:
    """200,000 small JSON Lines records (the issue: memory grew about 72 bytes a record)."""
    with path.open("wb") as out:
        for start in range(0, MANY_RECORDS, 10_000):
            out.write(
                b"".join(b'{"prompt":"p%d","chosen":"a","rejected":"b"}\n' % i for i in range(start, start + 10_000))
            )


def write_fifo(path: Path) -> None:
    """A named pipe with no writer: opening it for reading blocks forever."""
    os.mkfifo(path)


def write_directory(path: Path) -> None:
    path.mkdir()
    (path / "inside.json").write_bytes(array(pairs(2)))


@dataclass(frozen=True)
class DatasetCase:
    """A dataset file: its bytes (or a writer of the file), the CLI's exit status, and words its output holds."""

    name: str
    content: bytes | Callable[[Path], None]
    outcome: int
    says: str = ""
    suffix: str = ".json"

    def write(self, folder: Path) -> Path:
        path = folder / f"{self.name}{self.suffix}"
        if callable(self.content):
            self.content(path)
        else:
            path.write_bytes(self.content)
        return path


_BYTES = random.Random(11).randbytes(4096)
_DEEP = 100_000

DATASETS = [
    # ---- valid: what a user means to send, including the awkward but legitimate --------------------------------
    DatasetCase("array-of-two-pairs", array(pairs(2)), VALID, "valid (json, 2 records)"),
    DatasetCase("jsonl-of-two-pairs", lines(pairs(2)), VALID, "valid (jsonl, 2 records)", ".jsonl"),
    DatasetCase("pretty-printed-array", json.dumps(pairs(3), indent=4).encode(), VALID, "valid"),
    DatasetCase("crlf-jsonl", lines(pairs(3)).replace(b"\n", b"\r\n"), VALID, "valid", ".jsonl"),
    DatasetCase("jsonl-with-blank-lines", b"\n\n" + lines(pairs(2)) + b"\n\n\n", VALID, "valid", ".jsonl"),
    DatasetCase("utf8-byte-order-mark", b"\xef\xbb\xbf" + array(pairs(2)), VALID, "valid"),
    DatasetCase("no-suffix-detected-as-jsonl", lines(pairs(2)), VALID, "valid", ".data"),
    DatasetCase("emoji-rtl-and-combining-text", with_text("👍🏽 مرحبا é ﷽ \u0301x"), VALID, "valid"),
    DatasetCase(
        "conversational-messages",
        lines(
            [
                {
                    "chosen": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "yes"}],
                    "rejected": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "no"}],
                }
                for i in range(2)
            ]
        ),
        VALID,
        "valid (conversational",
        ".jsonl",
    ),
    DatasetCase(
        "hh-style-transcripts",
        lines(
            [
                {"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes", "rejected": f"\n\nHuman: q{i}\n\nAssistant: no"}
                for i in range(2)
            ]
        ),
        VALID,
        "valid (hh",
        ".jsonl",
    ),
    DatasetCase("long-string-under-the-limit-in-an-array", with_text("x" * UNDER_THE_LIMIT), VALID, "valid"),
    DatasetCase(
        "long-string-under-the-limit-in-jsonl", with_text("x" * UNDER_THE_LIMIT, lines), VALID, "valid", ".jsonl"
    ),
    DatasetCase("many-small-records", write_many_records, VALID, f"{MANY_RECORDS} records", ".jsonl"),
    # ---- invalid: read, and refused naming what is wrong ---------------------------------------------------------
    DatasetCase("one-pair-too-few-to-hold-out", array(pairs(1)), INVALID, "at least 2"),
    DatasetCase("one-pair-jsonl", lines(pairs(1)), INVALID, "at least 2", ".jsonl"),
    DatasetCase("empty-array", b"[]", INVALID, "empty"),
    DatasetCase("empty-file", b"", INVALID, "empty"),
    DatasetCase("only-whitespace", b" \n\t\r\n ", INVALID, "empty"),
    DatasetCase("only-a-byte-order-mark", b"\xef\xbb\xbf", INVALID, "empty"),
    DatasetCase(
        "duplicate-key-in-an-array-record",
        b'[{"prompt":"p","chosen":"a","rejected":"b"},{"prompt":"p","chosen":"a","rejected":"b","chosen":"z"}]',
        INVALID,
        "chosen",
    ),
    DatasetCase(
        "duplicate-key-in-a-json-line",
        lines(pairs(1)) + b'{"prompt":"p","chosen":"a","rejected":"b","prompt":"q"}\n',
        INVALID,
        "prompt",
        ".jsonl",
    ),
    DatasetCase(
        "duplicate-key-through-an-escape",
        b'[{"prompt":"p","chosen":"a","rejected":"b"},{"prompt":"p","chosen":"a","rejected":"b","\\u0063hosen":"z"}]',
        INVALID,
        "chosen",
    ),
    DatasetCase("chosen-equals-rejected", flagged_pair("same", "same"), INVALID, "must differ from 'chosen'"),
    DatasetCase("equal-after-nfc", flagged_pair("caf\u00e9", "cafe\u0301"), INVALID, "must differ from 'chosen'"),
    DatasetCase("compatibility-forms-differ", flagged_pair("ｆｕｌｌｗｉｄｔｈ x²", "fullwidth x2"), VALID, "valid"),
    DatasetCase(
        "equal-but-for-a-zero-width-space", flagged_pair("answer", "ans\u200bwer"), INVALID, "must differ from 'chosen'"
    ),
    DatasetCase(
        "equal-but-for-a-zero-width-joiner",
        flagged_pair("\u2060answer\ufeff", "answer"),
        INVALID,
        "must differ from 'chosen'",
    ),
    DatasetCase("utf16-le-without-bom", array(pairs(2)).decode().encode("utf-16-le"), INVALID, "UTF-16"),
    DatasetCase("utf16-be-without-bom", lines(pairs(2)).decode().encode("utf-16-be"), INVALID, "UTF-16", ".jsonl"),
    DatasetCase("utf16-with-bom", array(pairs(2)).decode().encode("utf-16"), INVALID, "UTF-16"),
    DatasetCase("utf32-with-bom", array(pairs(2)).decode().encode("utf-32"), INVALID, "UTF-32"),
    DatasetCase(
        "utf32-be-with-bom", b"\x00\x00\xfe\xff" + array(pairs(2)).decode().encode("utf-32-be"), INVALID, "UTF-32"
    ),
    DatasetCase("utf32-le-without-bom", lines(pairs(2)).decode().encode("utf-32-le"), INVALID, "UTF-32", ".jsonl"),
    DatasetCase("long-string-over-the-limit-in-an-array", with_text("x" * TOO_LONG), INVALID, "8 MiB"),
    DatasetCase("long-string-over-the-limit-in-jsonl", with_text("x" * TOO_LONG, lines), INVALID, "8 MiB", ".jsonl"),
    DatasetCase("invalid-utf8-byte", array(pairs(2)).replace(b"good", b"go\xffd", 1), INVALID, "UTF-8"),
    DatasetCase("overlong-utf8", array(pairs(2)).replace(b"good", b"go\xc0\xafd", 1), INVALID, "UTF-8"),
    DatasetCase("truncated-array", array(pairs(3))[:-20], INVALID, "INVALID"),
    DatasetCase("truncated-last-json-line", lines(pairs(3))[:-15], INVALID, "INVALID", ".jsonl"),
    DatasetCase("random-bytes", _BYTES, INVALID, "INVALID", ".data"),
    DatasetCase("deeply-nested-arrays", b"[" * _DEEP + b"]" * _DEEP, INVALID, "INVALID"),
    DatasetCase("deeply-nested-field", b'[{"prompt":' + b"[" * _DEEP + b"]" * _DEEP + b"}]", INVALID, "INVALID"),
    DatasetCase("nul-byte-in-the-file", array(pairs(2)).replace(b"good", b"go\x00od", 1), INVALID, "INVALID"),
    DatasetCase("nul-escape-in-a-string", with_text("a\u0000b"), VALID, "valid"),  # text to tokenize, not a path
    DatasetCase(
        "lone-surrogate-escape",
        b'[{"prompt":"p","chosen":"\\ud800","rejected":"b"},' + array(pairs(1))[1:],
        INVALID,
        "INVALID",
    ),
    DatasetCase("top-level-object", json.dumps({"data": pairs(2)}).encode(), INVALID, "INVALID"),
    DatasetCase("top-level-number", b"42", INVALID, "INVALID"),
    DatasetCase("records-that-are-not-objects", b"[1, 2, 3]", INVALID, "INVALID"),
    DatasetCase("missing-rejected", array([*pairs(1), {"prompt": "p", "chosen": "a"}]), INVALID, "rejected"),
    DatasetCase(
        "rejected-is-a-number", array([*pairs(1), {"prompt": "p", "chosen": "a", "rejected": 7}]), INVALID, "rejected"
    ),
    DatasetCase("blank-answers", array([*pairs(1), pair(chosen="   ", rejected="")]), INVALID, "INVALID"),
    DatasetCase(
        "nan-and-huge-numbers", b'[{"prompt": NaN, "chosen": 1e999, "rejected": -Infinity}]', INVALID, "INVALID"
    ),
    # ---- unreadable: not a file the pipeline will read --------------------------------------------------------
    DatasetCase("fifo-without-a-writer", write_fifo, UNREADABLE, "FIFO"),
    DatasetCase("a-directory", write_directory, UNREADABLE, "cannot read"),
    DatasetCase("missing-file", lambda path: None, UNREADABLE, "cannot read"),
]

# ---- requests -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestCase:
    """A request's conf and the field its refusal must name (None: it is accepted and plans)."""

    name: str
    conf: Any
    refused: str | None


def overrides(**values: Any) -> dict[str, Any]:
    return {"dataset_uri": "data/prefs.json", "overrides": values}


def dotted(key: str, value: Any) -> dict[str, Any]:
    return {"dataset_uri": "data/prefs.json", "overrides": {key: value}}


MODEL_URI = "models/staged-tiny/"  # a model folder the test puts under the storage root

REQUESTS = [
    # ---- accepted ------------------------------------------------------------------------------------------------
    RequestCase("all-defaults", {}, None),
    RequestCase("a-local-dataset", {"dataset_uri": "data/prefs.json", "exp_name": "e1"}, None),
    RequestCase("a-gs-dataset", {"dataset_uri": "gs://bucket-a/prefs.jsonl"}, None),
    RequestCase("a-bucket-name-with-dots", {"dataset_uri": "gs://my.bucket.example/x.json"}, None),
    RequestCase("lora-and-ipo", {"dataset_uri": "data/prefs.json", "adapter": "lora", "loss": "ipo"}, None),
    RequestCase("sft-loss", {"dataset_uri": "data/prefs.json", "loss": "sft"}, None),
    RequestCase("tuning-inside-the-chosen-groups", overrides(**{"loss.beta": 0.2, "lr": 1e-4, "max_steps": 200}), None),
    RequestCase("max-steps-at-its-bound", overrides(max_steps=1_000_000), None),
    RequestCase("a-model-uri", {"dataset_uri": "data/prefs.json", "model_uri": MODEL_URI}, None),
    RequestCase(
        "output-uri-and-promotion",
        {
            "output_uri": "gs://bucket-a/out/",
            "promotion": {"metric": "loss", "min_delta": 0.01},
            "registered_model_name": "prefs-model",
        },
        None,
    ),
    # ---- overrides that choose a group or touch Hydra --------------------------------------------------------
    RequestCase("override-loss-name", dotted("loss.name", "sft"), "overrides.loss.name"),
    RequestCase("override-trainer-name", dotted("trainer.name", "fsdp"), "overrides.trainer.name"),
    RequestCase("override-adapter-name", dotted("adapter.name", "lora"), "overrides.adapter.name"),
    RequestCase("override-hydra-run-dir", dotted("hydra.run.dir", "/tmp/elsewhere"), "overrides.hydra.run.dir"),
    RequestCase("override-hydra-job-chdir", dotted("hydra.job.chdir", True), "overrides.hydra.job.chdir"),
    RequestCase("override-hydra-mode", dotted("hydra.mode", "MULTIRUN"), "overrides.hydra.mode"),
    RequestCase("override-hydra-itself", dotted("hydra", "x"), "overrides.hydra"),
    RequestCase("override-run-dir", dotted("run_dir", "/etc"), "overrides.run_dir"),
    RequestCase(
        "override-the-dataset", dotted("datasets.from_uri.uri", "/etc/passwd"), "overrides.datasets.from_uri.uri"
    ),
    RequestCase("override-the-model-path", dotted("model.name_or_path", "/somewhere"), "overrides.model.name_or_path"),
    RequestCase("override-exp-name", dotted("exp_name", "other"), "overrides.exp_name"),
    RequestCase("override-of-no-field", dotted("not_a_key", 1), "overrides.not_a_key"),
    RequestCase("override-a-field-of-another-loss", {**dotted("loss.beta", 0.2), "loss": "sft"}, "overrides.loss.beta"),
    RequestCase("override-value-a-list", dotted("lr", [1, 2]), "overrides.lr"),
    RequestCase("override-key-not-dotted-name", dotted("1bad", 1), "overrides.1bad"),
    RequestCase("too-many-overrides", {"overrides": {f"k{i}": i for i in range(65)}}, "overrides"),
    # ---- values without bounds (the run would never end, or die allocating) --------------------------------------
    RequestCase("max-steps-1e12-float", dotted("max_steps", 1e12), "overrides.max_steps"),
    RequestCase("max-steps-10-to-the-12", dotted("max_steps", 10**12), "overrides.max_steps"),
    RequestCase("max-length-1e9", dotted("max_length", 10**9), "overrides.max_length"),
    RequestCase("max-length-beyond-the-models-positions", dotted("max_length", 131072), "overrides.max_length"),
    RequestCase("batch-size-1e9", dotted("batch_size", 10**9), "overrides.batch_size"),
    RequestCase("lr-1e6", dotted("lr", 1e6), "overrides.lr"),
    RequestCase("lr-negative", dotted("lr", -1), "overrides.lr"),
    RequestCase("lr-nan", dotted("lr", float("nan")), "overrides.lr"),
    RequestCase("lr-infinite", dotted("lr", float("inf")), "overrides.lr"),
    RequestCase(
        "promotion-min-delta-negative", {"promotion": {"metric": "loss", "min_delta": -1}}, "promotion.min_delta"
    ),
    # ---- bucket names Cloud Storage would refuse -------------------------------------------------------------
    RequestCase("bucket-with-two-dots", {"dataset_uri": "gs://bu..cket/x.json"}, "dataset_uri"),
    RequestCase("bucket-an-ip-address", {"dataset_uri": "gs://192.168.1.1/x.json"}, "dataset_uri"),
    RequestCase("bucket-starting-goog", {"dataset_uri": "gs://googbucket/x.json"}, "dataset_uri"),
    RequestCase("bucket-with-google", {"dataset_uri": "gs://my-g00gle-data/x.json"}, "dataset_uri"),
    RequestCase("bucket-uppercase", {"dataset_uri": "gs://Bucket/x.json"}, "dataset_uri"),
    RequestCase("bucket-too-short", {"dataset_uri": "gs://ab/x.json"}, "dataset_uri"),
    RequestCase("bucket-starting-with-a-dash", {"dataset_uri": "gs://-bucket/x.json"}, "dataset_uri"),
    RequestCase("bucket-64-characters", {"dataset_uri": f"gs://{'b' * 64}/x.json"}, "dataset_uri"),
    RequestCase("output-bucket-with-two-dots", {"output_uri": "gs://bu..cket/out/"}, "output_uri"),
    # ---- where the data and the model come from ---------------------------------------------------------------
    RequestCase("model-and-model-uri", {"model": "qwen2.5-0.5b", "model_uri": MODEL_URI}, "model_uri"),
    RequestCase("model-uri-other-scheme", {"model_uri": "s3://bucket/model/"}, "model_uri"),
    RequestCase("model-uri-out-of-the-root", {"model_uri": "../../etc/"}, "model_uri"),
    RequestCase("model-uri-empty", {"model_uri": ""}, "model_uri"),
    RequestCase("model-uri-bad-bucket", {"model_uri": "gs://192.168.1.1/m/"}, "model_uri"),
    RequestCase("dataset-out-of-the-root", {"dataset_uri": "../../etc/passwd"}, "dataset_uri"),
    RequestCase("dataset-absolute-elsewhere", {"dataset_uri": "/etc/passwd"}, "dataset_uri"),
    RequestCase("dataset-http", {"dataset_uri": "http://evil.example/x.json"}, "dataset_uri"),
    RequestCase("dataset-empty", {"dataset_uri": ""}, "dataset_uri"),
    RequestCase("dataset-very-long", {"dataset_uri": "d/" * 1500}, "dataset_uri"),
    RequestCase("dataset-with-nul", {"dataset_uri": "data/a\x00b.json"}, "dataset_uri"),
    RequestCase("dataset-lone-surrogate", {"dataset_uri": "data/\ud800.json"}, "dataset_uri"),
    # ---- the request's own shape ---------------------------------------------------------------------------------
    RequestCase("exp-name-a-path", {"exp_name": "../x"}, "exp_name"),
    RequestCase("exp-name-too-long", {"exp_name": "e" * 200}, "exp_name"),
    RequestCase("unknown-field", {"dataset_uri": "data/prefs.json", "lossname": "dpo"}, "lossname"),
    RequestCase("unknown-loss", {"loss": "nope"}, "loss"),
    RequestCase("unknown-trainer", {"trainer": "../fsdp"}, "trainer"),
    RequestCase("registered-model-name-a-path", {"registered_model_name": "../x"}, "registered_model_name"),
    RequestCase("not-an-object", ["dataset_uri", "data/prefs.json"], "(request)"),
]
