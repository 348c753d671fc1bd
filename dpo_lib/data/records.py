"""Raw records out of a JSON array or a JSON Lines file, streamed with bounded memory.

Datasets can be larger than a worker's memory and validation must report every problem it
can, so nothing here parses a whole file at once:

* JSON Lines are read one line at a time; a bad line is reported and skipped, and reading
  goes on with the next line.
* JSON arrays are parsed incrementally from ijson's event stream (``basic_parse``). We build
  each item from the events ourselves rather than use ``ijson.items``: that one keeps a
  dotted path per nesting level whose size grows with the square of the depth, so a hostile
  ``[[[[...`` file exhausts memory. Our builder stops at ``MAX_DEPTH`` instead. A syntax
  error ends an array (a JSON parser cannot resynchronise), after reporting where it is.

Everything this module finds wrong is yielded as an :class:`Issue`; callers never see a
parser exception.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import ijson

from dpo_lib.data.fields import json_type
from dpo_lib.data.issues import Issue

ARRAY = "array"
LINES = "lines"

MAX_DEPTH = 64
"""Deepest nesting accepted in a JSON array file (a record with messages needs 4 levels)."""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longest JSON Lines line read; longer lines are reported and skipped so memory stays bounded."""

CHUNK_BYTES = 64 * 1024

_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass(frozen=True)
class RawRecord:
    """One parsed item of the container; ``position`` is the array index or the line number."""

    location: str
    position: int
    value: Any


class _InvalidUtf8(Exception):
    def __init__(self, line: int, column: int, byte: int | None) -> None:
        super().__init__(line, column, byte)
        self.line, self.column, self.byte = line, column, byte


class _TooDeep(Exception):
    pass


class _ByteReader:
    """Buffers a binary stream, tracks line numbers and checks UTF-8 as bytes go by.

    ``read`` never returns bytes of two different lines, so when ijson fails on a chunk we
    know the exact line of the failure even in a pretty-printed, gigabyte-sized array.
    """

    def __init__(self, raw: BinaryIO, chunk_size: int = CHUNK_BYTES) -> None:
        self._raw = raw
        self._chunk_size = chunk_size
        self._buf = b""
        self._pos = 0
        self._eof = False
        self.line = 1  # line of the next unread byte
        self.chunk_line = 1  # line of the last chunk handed out by read()
        self._offset = 0  # bytes handed out so far
        self._line_start = 0  # offset where the current line starts
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def _fill(self) -> bool:
        """Make sure unread bytes are buffered; False at the end of the stream."""
        while self._pos >= len(self._buf):
            if self._eof:
                return False
            data = self._raw.read(self._chunk_size)
            if isinstance(data, str):
                raise TypeError("the dataset source must be opened in binary mode, got text")
            if not data:
                self._eof = True
                return False
            self._buf, self._pos = bytes(data), 0
        return True

    def _fill_at_least(self, count: int) -> None:
        while len(self._buf) - self._pos < count and not self._eof:
            data = self._raw.read(self._chunk_size)
            if isinstance(data, str):
                raise TypeError("the dataset source must be opened in binary mode, got text")
            if not data:
                self._eof = True
            else:
                self._buf = self._buf[self._pos :] + bytes(data)
                self._pos = 0

    def _advance(self, size: int, ends_line: bool) -> None:
        self._offset += size
        if ends_line:
            self.line += 1
            self._line_start = self._offset

    def starts_with_utf16_bom(self) -> bool:
        self._fill_at_least(3)
        return self._buf[self._pos : self._pos + 2] in _UTF16_BOMS

    def skip_leading(self) -> int | None:
        """Skip a UTF-8 byte order mark and whitespace; return the first other byte (unread)."""
        self._fill_at_least(3)
        if self._buf.startswith(_UTF8_BOM, self._pos):
            self._pos += len(_UTF8_BOM)
            self._offset += len(_UTF8_BOM)
        while self._fill():
            byte = self._buf[self._pos]
            if byte not in _WHITESPACE:
                return byte
            self._pos += 1
            self._advance(1, byte == 0x0A)
        return None

    def read(self, size: int = -1) -> bytes:
        """File-like ``read`` for ijson: at most ``size`` bytes, never past the end of a line."""
        if size == 0:
            return b""
        if not self._fill():
            self._check_utf8(b"", final=True)
            return b""
        if size < 0:
            size = self._chunk_size
        end = min(len(self._buf), self._pos + size)
        newline = self._buf.find(b"\n", self._pos, end)
        if newline >= 0:
            end = newline + 1
        chunk = self._buf[self._pos : end]
        self._pos = end
        self.chunk_line = self.line
        self._check_utf8(chunk)
        self._advance(len(chunk), newline >= 0)
        return chunk

    def _check_utf8(self, chunk: bytes, final: bool = False) -> None:
        pending = len(self._decoder.getstate()[0])
        if chunk.isascii() and not pending and not final:
            return
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            index = exc.start - pending  # may be negative: the sequence began in the last chunk
            bad = chunk[index] if 0 <= index < len(chunk) else None
            column = self._offset + index - self._line_start + 1
            raise _InvalidUtf8(self.line, column, bad) from None

    def readline(self, limit: int) -> bytes | None:
        """The next line, newline included; None at the end; ``_TOO_LONG`` past ``limit`` bytes."""
        if not self._fill():
            return None
        parts: list[bytes] = []
        size = 0
        too_long = False
        while self._fill():
            newline = self._buf.find(b"\n", self._pos)
            end = len(self._buf) if newline < 0 else newline + 1
            if not too_long:
                size += end - self._pos
                if size > limit:
                    too_long, parts = True, []
                else:
                    parts.append(self._buf[self._pos : end])
            self._pos = end
            if newline >= 0:
                break
        self.line += 1
        return _TOO_LONG if too_long else b"".join(parts)


_TOO_LONG = b"\x00too long"  # compared by identity: a sentinel, never a line's content


def _describe_start(byte: int) -> str:
    char = chr(byte)
    if char in "-0123456789":
        return "a number"
    if char == '"':
        return "a string"
    if char in "tf":
        return "a boolean (or other bare word)"
    if char == "n":
        return "null (or other bare word)"
    if 0x20 < byte < 0x7F:
        return f"'{char}', which does not start a JSON value"
    return f"byte 0x{byte:02x}, which is not JSON text (a binary or compressed file?)"


class RecordStream:
    """Iterate the records of a JSON array or JSON Lines stream as :class:`RawRecord` or
    :class:`Issue` items.

    The container is sniffed from the first significant byte (``[`` array, ``{`` lines);
    ``expected`` (``ARRAY``/``LINES``) makes any other container an error. After iteration,
    ``container`` says what was found and ``count`` how many records were seen, valid or not.
    """

    def __init__(self, stream: BinaryIO, expected: str | None = None) -> None:
        self._reader = _ByteReader(stream)
        self._expected = expected
        self.container: str | None = expected
        self.count = 0

    def __iter__(self) -> Iterator[RawRecord | Issue]:
        reader = self._reader
        if reader.starts_with_utf16_bom():
            yield Issue("file", None, "is UTF-16 encoded (it starts with a UTF-16 byte order mark); use UTF-8")
            return
        first = reader.skip_leading()
        if first is None:
            return  # empty: the caller reports an empty dataset
        found = ARRAY if first == ord("[") else LINES if first == ord("{") else None
        if found is None:
            yield Issue(
                "file",
                None,
                "top level must be a JSON array of records or JSON Lines of objects, "
                f"but the file starts with {_describe_start(first)}",
            )
            return
        if self._expected is not None and found != self._expected:
            yield Issue("file", None, _container_mismatch(self._expected))
            return
        self.container = found
        yield from self._iter_array() if found == ARRAY else self._iter_lines()

    def _iter_lines(self) -> Iterator[RawRecord | Issue]:
        reader = self._reader
        while True:
            lineno = reader.line
            raw = reader.readline(MAX_LINE_BYTES)
            if raw is None:
                return
            location = f"line {lineno}"
            if raw is _TOO_LONG:
                self.count += 1
                yield Issue(location, None, f"line is longer than {MAX_LINE_BYTES >> 20} MiB; skipped")
                continue
            text_bytes = raw.strip(_WHITESPACE)
            if not text_bytes:
                continue  # blank lines are allowed between records
            self.count += 1
            lead = len(raw) - len(raw.lstrip(_WHITESPACE))
            item = _parse_line(text_bytes, lead, location, lineno)
            yield item

    def _iter_array(self) -> Iterator[RawRecord | Issue]:
        reader = self._reader
        index = 0
        finished = False
        try:
            events = ijson.basic_parse(reader, use_float=True, buf_size=CHUNK_BYTES)
            next(events)  # the opening '[' (sniffed already)
            for value in _build_items(events):
                yield RawRecord(f"record {index}", index, value)
                index += 1
                self.count += 1
            finished = True
            for _ in events:  # only whitespace may follow; the parser reports anything else
                pass
        except _InvalidUtf8 as exc:
            self.count += not finished
            yield Issue(_where(index, finished), None, f"{_utf8_message(exc)}; stopped reading")
        except _TooDeep:
            self.count += 1
            yield Issue(f"record {index}", None, f"JSON nested deeper than {MAX_DEPTH} levels; stopped reading")
        except ijson.JSONError as exc:
            self.count += not finished
            message, near = _ijson_message(exc)
            if "premature EOF" in message:
                message += " (the file is truncated or a bracket is missing)"
            detail = f"malformed JSON at line {reader.chunk_line}: {message}{near}"
            yield Issue(_where(index, finished), None, detail)


def _where(index: int, finished: bool) -> str:
    return "file" if finished else f"record {index}"


def _container_mismatch(expected: str) -> str:
    if expected == ARRAY:
        return (
            "format 'json' needs a JSON array ('[' ...) at the top level, but the file starts with "
            "'{' (JSON Lines? use format 'jsonl')"
        )
    return (
        "format 'jsonl' needs one JSON object per line, but the file starts with '[' (a JSON array? use format 'json')"
    )


def _utf8_message(exc: _InvalidUtf8) -> str:
    byte = "" if exc.byte is None else f" (0x{exc.byte:02x})"
    return f"invalid UTF-8 at line {exc.line}, byte {exc.column}{byte}"


def _parse_line(text_bytes: bytes, lead: int, location: str, lineno: int) -> RawRecord | Issue:
    """Parse one JSON Lines record; every failure becomes an Issue for that line."""
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = text_bytes[exc.start]
        return Issue(location, None, f"invalid UTF-8 at byte {lead + exc.start + 1} (0x{bad:02x}); line skipped")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "; the line ends before the JSON value does" if exc.pos >= len(text) else ""
        return Issue(location, None, f"malformed JSON at column {lead + exc.colno}: {exc.msg}{hint}")
    except RecursionError:
        return Issue(location, None, "malformed JSON: nested too deeply")
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        return Issue(location, None, f"malformed JSON: {exc}")
    if not isinstance(value, dict):
        return Issue(location, None, f"must be a JSON object (one record per line), found {json_type(value)}")
    return RawRecord(location, lineno, value)


def _build_items(events: Iterator[tuple[str, Any]]) -> Iterator[Any]:
    """Assemble the items of the top-level array from ijson events, refusing deep nesting."""
    stack: list[tuple[Any, Any]] = []  # (container being built, its key in the parent)
    key: Any = None
    for event, raw in events:
        if event == "map_key":
            key = raw
            continue
        if event == "start_map" or event == "start_array":
            if len(stack) + 1 >= MAX_DEPTH:
                raise _TooDeep
            stack.append(({} if event == "start_map" else [], key))
            key = None
            continue
        if event == "end_map" or event == "end_array":
            if not stack:  # the top-level array closed
                return
            value, key = stack.pop()
        else:
            value = raw
        if not stack:
            yield value
        else:
            parent = stack[-1][0]
            if isinstance(parent, list):
                parent.append(value)
            else:
                parent[key] = value


def _ijson_message(exc: Exception) -> tuple[str, str]:
    """yajl's message, first line only, and a short ``; near '...'`` excerpt when it gives one."""
    text = str(exc)
    if text.startswith(("b'", 'b"')):  # some yajl errors arrive as a bytes repr
        text = text[2:-1].replace("\\n", "\n")
    lines = text.splitlines() or ["unknown parse error"]
    message = lines[0].strip().rstrip(".")
    excerpt = lines[1].strip() if len(lines) > 2 else ""
    near = f"; near '{excerpt[:60]}'" if excerpt else ""
    return message, near
