"""``python -m dpo_lib validate PATH_OR_URI [--format F] [--json] [--model M [--max-length N] ...]``.

With ``--model`` (a preset of configs/model/ or a Hugging Face folder) the statistics also say how
the trainer's truncation cuts the data with that model's tokenizer and lengths
(:mod:`dpo_lib.data.truncation`), measured in the same pass.

Exit status: 0 valid (warnings allowed), 1 invalid (including too few pairs for a run: one to
train on and one held out, as ``stage`` requires), 2 the input could not be read (missing file,
permission, storage error, unknown format name). Airflow tasks branch on it, so bad
input of any kind must end in one of these codes with a message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from dpo_lib.data.dataset import open_dataset
from dpo_lib.data.formats import FORMATS
from dpo_lib.data.interface import Source
from dpo_lib.data.issues import Issue
from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.split import split_problem
from dpo_lib.data.validation import DatasetScan

if TYPE_CHECKING:  # imported when --model is given: plain validation does not pay for pydantic
    from dpo_lib.data.truncation import TruncationTracker

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNREADABLE = 2


class _Unreadable(Exception):
    """The input cannot be read at all (as opposed to being read and found invalid)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="PATH_OR_URI", help="local path, file:// URI or storage URI")
    parser.add_argument(
        "--format",
        default=None,
        metavar="FORMAT",
        help=f"force the format ({', '.join(FORMATS)}); detected from the data by default",
    )
    parser.add_argument("--json", action="store_true", help="print the report and statistics as one JSON object")
    tokens = parser.add_argument_group("truncation (measured when --model is given)")
    tokens.add_argument(
        "--model",
        metavar="PRESET_OR_DIR",
        help="a configs/model/ preset or a Hugging Face folder whose tokenizer counts the tokens",
    )
    tokens.add_argument("--max-length", type=int, metavar="N", help="default: the preset's, else the config default")
    tokens.add_argument("--max-prompt-length", type=int, metavar="N", help="default: as --max-length")
    tokens.add_argument("--truncation-mode", choices=("keep_end", "keep_start"), help="default: as --max-length")


def run(args: argparse.Namespace) -> int:
    name = args.source
    backend: Any = None
    try:
        if args.format is not None and args.format not in FORMATS:
            raise _Unreadable(f"unknown format {args.format!r}; expected one of: {', '.join(FORMATS)}")
        tracker = _truncation_tracker(args)
        source, backend = _resolve(args.source)
        if tracker is None:
            dataset = open_dataset(source, args.format, name=name)
            report = dataset.validate()
            stats = dataset.get_stats()
        else:  # the same pass, each valid pair tokenized as it goes by
            scan = DatasetScan(source, args.format, name=name)
            for _, pair in scan.pairs():
                _measure(tracker, pair)
            report, stats = scan.finish()
        if report.ok and (problem := split_problem(report.record_count, eval_fraction=0.0)):
            report.errors.append(Issue("file", None, f"dataset {problem}"))  # stage would refuse it
            report.error_count += 1
    except Exception as exc:  # noqa: BLE001 - the contract is an exit code and a message, not a traceback
        return _fail(name, _describe(exc), args.json)
    finally:
        if backend is not None:
            backend.close()
    truncation = tracker.result() if tracker is not None else None
    if args.json:
        payload = {**report.to_dict(), "stats": stats.to_dict()}
        if truncation is not None:
            payload["truncation"] = truncation.model_dump(mode="json")
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print(report.format_text())
        print(stats.format_text())
        if truncation is not None:
            print(truncation.format_text())
    return EXIT_VALID if report.ok else EXIT_INVALID


def _truncation_tracker(args: argparse.Namespace) -> TruncationTracker | None:
    """The tracker for ``--model`` and the lengths (composed as ``train`` composes them); None without ``--model``."""
    lengths = {"max_length": args.max_length, "max_prompt_length": args.max_prompt_length,
               "truncation_mode": args.truncation_mode}  # fmt: skip
    if args.model is None:
        if given := [f"--{key.replace('_', '-')}" for key, value in lengths.items() if value is not None]:
            raise _Unreadable(f"{', '.join(given)} needs --model (the tokenizer that counts the tokens)")
        return None
    from dpo_lib.config import build_config
    from dpo_lib.data.truncation import TruncationTracker
    from dpo_lib.models.tokenizer import load_tokenizer
    from dpo_lib.spec import SpecError, config_options

    values = {"exp_name": "validate", **{key: value for key, value in lengths.items() if value is not None}}
    groups = []
    if args.model in config_options("model"):
        groups.append(f"model={args.model}")
    elif Path(args.model).exists() or re.fullmatch(r"[\w.-]+/[\w.-]+", args.model):  # a folder, or a Hub name
        values["model.name_or_path"] = args.model
    else:
        presets = ", ".join(config_options("model"))
        raise _Unreadable(f"--model {args.model}: neither a folder nor a preset ({presets})")
    try:
        config = build_config(groups, values)
    except SpecError as exc:
        raise _Unreadable(str(exc).replace("\n", " ")) from None
    try:
        tokenizer = load_tokenizer(config.model)
    except Exception as exc:  # noqa: BLE001 - a missing folder, no Hub, no transformers: one message
        raise _Unreadable(f"cannot load the tokenizer of {args.model}: {exc}") from None
    return TruncationTracker(tokenizer, config)


def _measure(tracker: TruncationTracker, pair: PreferencePair) -> None:
    try:
        tracker.add(pair)
    except ValueError as exc:  # conversational data and a tokenizer without a chat template
        raise _Unreadable(f"cannot tokenize with {tracker.config.model.name_or_path}: {exc}") from None


def _resolve(arg: str) -> tuple[Source, Any]:
    """(source, storage backend to close or None): local paths and ``file://`` URIs are read
    directly; other URIs through the storage layer, as a stream opener."""
    if "://" not in arg:
        return arg, None
    parsed = urlparse(arg)
    if parsed.scheme.lower() == "file":
        if parsed.netloc not in ("", "localhost"):
            raise _Unreadable(f"file URI with a remote host is not supported: {arg}")
        return unquote(parsed.path), None
    # Imported only here: the storage layer pulls in cloud clients that local validation
    # (and Airflow's DAG parsing) should not pay for.
    try:
        from dpo_lib import storage
    except ImportError as exc:
        raise _Unreadable(f"remote storage support is unavailable ({exc})") from exc
    backend = storage.get_storage(arg)

    def open_uri() -> IO[bytes]:
        return backend.open_read(arg)

    return open_uri, backend


def _is_storage_error(exc: BaseException) -> bool:
    storage = sys.modules.get("dpo_lib.storage")
    error_type = getattr(storage, "StorageError", None)
    return isinstance(error_type, type) and isinstance(exc, error_type)


def _describe(exc: Exception) -> str:
    if isinstance(exc, _Unreadable):
        return str(exc)
    if isinstance(exc, OSError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        return f"cannot read: {reason}"
    if _is_storage_error(exc):
        return f"storage error: {getattr(exc, 'reason', exc)}"
    if isinstance(exc, MemoryError):
        return "out of memory while reading the input"
    return f"unexpected {type(exc).__name__} while reading the input: {exc}"


def _fail(name: str, message: str, as_json: bool) -> int:
    print(f"error: {name}: {message}", file=sys.stderr)
    if as_json:
        payload: dict[str, Any] = {"ok": False, "source": name, "read_error": message}
        print(json.dumps(payload, ensure_ascii=False))
    return EXIT_UNREADABLE
