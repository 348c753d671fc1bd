"""``python -m dpo_lib validate PATH_OR_URI [--format F] [--json]``.

Exit status: 0 valid (warnings allowed), 1 invalid (including too few pairs for a run: one to
train on and one held out, as ``stage`` requires), 2 the input could not be read (missing file,
permission, storage error, unknown format name). Airflow tasks branch on it, so bad
input of any kind must end in one of these codes with a message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Any
from urllib.parse import unquote, urlparse

from dpo_lib.data.dataset import open_dataset
from dpo_lib.data.formats import FORMATS
from dpo_lib.data.interface import Source
from dpo_lib.data.issues import Issue
from dpo_lib.data.split import split_problem

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


def run(args: argparse.Namespace) -> int:
    name = args.source
    backend: Any = None
    try:
        if args.format is not None and args.format not in FORMATS:
            raise _Unreadable(f"unknown format {args.format!r}; expected one of: {', '.join(FORMATS)}")
        source, backend = _resolve(args.source)
        dataset = open_dataset(source, args.format, name=name)
        report = dataset.validate()
        if report.ok and (problem := split_problem(report.record_count, eval_fraction=0.0)):
            report.errors.append(Issue("file", None, f"dataset {problem}"))  # stage would refuse it
            report.error_count += 1
        stats = dataset.get_stats()
    except Exception as exc:  # noqa: BLE001 - the contract is an exit code and a message, not a traceback
        return _fail(name, _describe(exc), args.json)
    finally:
        if backend is not None:
            backend.close()
    if args.json:
        print(json.dumps({**report.to_dict(), "stats": stats.to_dict()}, ensure_ascii=False))
    else:
        print(report.format_text())
        print(stats.format_text())
    return EXIT_VALID if report.ok else EXIT_INVALID


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
