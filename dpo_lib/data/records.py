"""Raw records out of a JSON array or a JSON Lines file: one streaming pass, linear time, bounded memory.

Each record is parsed on its own by the standard library's C scanner. A bad JSON Lines line is
reported and skipped; a syntax error ends a JSON array. Every record is held to the same limits:
at most ``MAX_RECORD_BYTES`` bytes, valid UTF-8, no key twice in one object, and nesting within
Python's recursion limit. Everything wrong is yielded as an :class:`Issue`; callers never see a
parser exception.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, BinaryIO, NamedTuple

from dpo_lib.data.fields import json_type
from dpo_lib.data.issues import Issue

ARRAY = "array"
LINES = "lines"

MAX_RECORD_BYTES = 8 * 1024 * 1024
"""Largest record read, in bytes of the file. Longer ones are reported instead of parsed, which
bounds the memory and time one record can take (it holds a few times its size while parsed)."""

CHUNK_BYTES = 256 * 1024
"""How much is read from the stream at a time, once past the first reads (see ``_Chunks``)."""
FIRST_CHUNK_BYTES = 64 * 1024

_WHITESPACE = b" \t\r\n"
_UTF8_BOM = b"\xef\xbb\xbf"
# Byte order marks of the encodings a JSON file must not be in; UTF-32's first: UTF-32-LE's starts like UTF-16-LE's.
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_SKIP_WHITESPACE = re.compile(r"[ \t\r\n]*").match
_SEPARATOR = re.compile(r"[ \t\r\n]*,[ \t\r\n]*").match
_REFILL_BELOW = 16 * 1024
"""Text is added to an array's window before an item when less than this is left, so that
items rarely straddle its end: a scanner error there costs a pass over the window."""
_LATIN1_ESCAPE = re.compile(r"\\u00[89a-fA-F]")  # an escape for a non-ASCII character of Latin-1
_TAIL_SLACK = 16
"""An array item failing this close to the end of the window may just be cut off there
(``tru``, ``1.5e``, ``\\u00``); it is parsed again with more text before being called malformed."""


class RawRecord(NamedTuple):
    """One parsed item of the container; ``position`` is the array index or the line number."""

    location: str
    position: int
    value: Any


# Builds a RawRecord without NamedTuple's Python-level __new__ (0.1 instead of 0.7 µs a record).
_raw_record = partial(tuple.__new__, RawRecord)


class _RepeatedKeys(dict[str, Any]):
    """A JSON object that named ``key`` more than once (the last value won, as in ``json``)."""

    key: str


class RecordStream:
    """Iterate the records of a JSON array or JSON Lines stream as :class:`RawRecord` or
    :class:`Issue` items.

    The container is sniffed from the first significant byte (``[`` array, ``{`` lines);
    ``expected`` (``ARRAY``/``LINES``) makes any other container an error. After iteration,
    ``container`` says what was found and ``count`` how many records were seen, valid or not;
    during it, ``last_size`` is how many bytes of the file the last record took.
    """

    def __init__(self, stream: BinaryIO, expected: str | None = None) -> None:
        self._chunks = _Chunks(stream)
        self._expected = expected
        self.container: str | None = expected
        self.count = 0
        self.last_size = 0
        self._repeated: list[str] = []  # keys found twice in the record being parsed
        self._scan = json.JSONDecoder(object_pairs_hook=_object_builder(self._repeated)).scan_once

    def __iter__(self) -> Iterator[RawRecord | Issue]:
        head = self._chunks.read_at_least(64)
        for bom, encoding in _WIDE_BOMS:
            if head.startswith(bom):
                yield Issue(
                    "file", None, f"is {encoding} encoded (it starts with a {encoding} byte order mark); use UTF-8"
                )
                return
        if wide := _wide_without_bom(head):
            yield Issue("file", None, f"looks {wide} encoded (no byte order mark); the file must be UTF-8")
            return
        if head.startswith(_UTF8_BOM):
            head = head[len(_UTF8_BOM) :]
        start = self._skip_blank_lines(head)
        if start is None:
            return  # empty: the caller reports an empty dataset
        data, line = start
        first = data.lstrip(_WHITESPACE)[0]
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
        yield from self._iter_array(data, line) if found == ARRAY else self._iter_lines(data, line)

    def _skip_blank_lines(self, data: bytes) -> tuple[bytes, int] | None:
        """(the data from the start of the first line holding something, that line's number); None if blank."""
        line = 1
        while not data.lstrip(_WHITESPACE):
            line += data.count(b"\n")
            data = self._chunks.read()
            if not data:
                return None
        significant = len(data) - len(data.lstrip(_WHITESPACE))
        line_start = data.rfind(b"\n", 0, significant) + 1
        return data[line_start:], line + data.count(b"\n", 0, line_start)

    # -- JSON Lines -----------------------------------------------------------------------------

    def _iter_lines(self, data: bytes, lineno: int) -> Iterator[RawRecord | Issue]:
        read, parse = self._chunks.read, self._parse_line
        carried: list[bytes] = []  # the start of a line that continues in the next chunk
        carried_size = 0  # its size, counting what was dropped of an over-long one
        while data:
            start, newline = 0, data.find(b"\n")
            if newline >= 0 and carried_size:  # this chunk ends the carried line
                carried.append(data[:newline])
                line = _TOO_LONG if carried_size + newline > MAX_RECORD_BYTES else b"".join(carried)
                carried, carried_size = [], 0
                item = parse(line, lineno)
                if item is not None:
                    yield item
                lineno += 1
                start, newline = newline + 1, data.find(b"\n", newline + 1)
            while newline >= 0:
                item = parse(data[start:newline], lineno)
                if item is not None:
                    yield item
                lineno += 1
                start, newline = newline + 1, data.find(b"\n", newline + 1)
            carried_size += len(data) - start
            if carried_size > MAX_RECORD_BYTES:
                carried = []  # drop what is kept of an over-long line; its size says it was one
            elif start < len(data):
                carried.append(data[start:])
            data = read()
        if carried_size:
            item = parse(b"".join(carried) if carried else _TOO_LONG, lineno)
            if item is not None:
                yield item

    def _parse_line(self, line: bytes, lineno: int) -> RawRecord | Issue | None:
        """Parse one JSON Lines record (None for a blank line); every failure becomes an Issue for it."""
        if line is _TOO_LONG:
            self.count += 1
            return _too_long(f"line {lineno}", "skipped")
        text_bytes = line.strip(_WHITESPACE)
        if not text_bytes:
            return None
        self.count += 1
        location = f"line {lineno}"
        if len(text_bytes) > MAX_RECORD_BYTES:
            return _too_long(location, "skipped")
        try:
            text = text_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = _lead(line) + exc.start + 1
            return Issue(location, None, f"invalid UTF-8 at byte {byte} (0x{text_bytes[exc.start]:02x}); line skipped")
        try:
            value, end = self._scan(text, 0)
            if end != len(text):
                raise json.JSONDecodeError("Extra data", text, end)
        except (StopIteration, json.JSONDecodeError) as exc:
            self._repeated.clear()
            if isinstance(exc, StopIteration):
                exc = json.JSONDecodeError("Expecting value", text, exc.value)
            hint = "; the line ends before the JSON value does" if exc.pos >= len(text) else ""
            return Issue(location, None, f"malformed JSON at column {_lead(line) + exc.colno}: {exc.msg}{hint}")
        except RecursionError:
            self._repeated.clear()
            return Issue(location, None, "malformed JSON: nested too deeply")
        except ValueError as exc:  # e.g. an integer with more digits than Python converts
            self._repeated.clear()
            return Issue(location, None, f"malformed JSON: {exc}")
        if not isinstance(value, dict):
            return Issue(location, None, f"must be a JSON object (one record per line), found {json_type(value)}")
        if self._repeated:
            return self._repeated_key(location, value)
        self.last_size = len(text_bytes)
        return _raw_record((location, lineno, value))

    def _repeated_key(self, location: str, value: Any) -> Issue:
        """The Issue for a record in which some object has a key twice, naming the first such key."""
        self._repeated.clear()
        path, obj = next((path, obj) for path, obj in _containers(value) if isinstance(obj, _RepeatedKeys))
        return Issue(location, _child_path(path, obj.key), "duplicate key: the object has this key more than once")

    # -- JSON arrays ----------------------------------------------------------------------------

    def _iter_array(self, data: bytes, lineno: int) -> Iterator[RawRecord | Issue]:
        window = _Window(self._chunks, data, lineno)
        scan = self._scan
        text = window.text
        pos = text.index("[") + 1
        index = 0
        while True:  # pos is after '[' or after ',': an item (or, first, the closing ']') comes next
            if len(text) - pos < _REFILL_BELOW and not window.eof:
                text, pos = window.more(pos)
            pos = _SKIP_WHITESPACE(text, pos).end()
            if pos == len(text):
                if window.eof:
                    yield self._array_error(window, pos, index, "the file ends inside the array")
                    return
                text, pos = window.more(pos)
                continue
            if index == 0 and text[pos] == "]":
                break
            try:
                value, end = scan(text, pos)
                if end == len(text) and not window.eof and not isinstance(value, (dict, list, str)):
                    raise json.JSONDecodeError("Expecting more", text, end)  # a number or literal may go on
            except (StopIteration, json.JSONDecodeError) as exc:
                self._repeated.clear()
                if isinstance(exc, StopIteration):
                    exc = json.JSONDecodeError("Expecting value", text, exc.value)
                cut_off = exc.msg.startswith("Unterminated string") or exc.pos >= len(text) - _TAIL_SLACK
                if not cut_off or window.eof:
                    yield self._array_error(window, exc.pos, index, exc.msg)
                    return
                if len(text) - pos > MAX_RECORD_BYTES:
                    self.count += 1
                    yield _too_long(f"record {index}", "stopped reading")
                    return
                text, pos = window.more(pos)
                continue
            except RecursionError:
                self._repeated.clear()
                self.count += 1
                yield Issue(f"record {index}", None, "JSON nested too deeply; stopped reading")
                return
            except ValueError as exc:  # e.g. an integer with more digits than Python converts
                self._repeated.clear()
                self.count += 1
                yield Issue(f"record {index}", None, f"malformed JSON at line {window.line_at(pos)}: {exc}")
                return
            self.count += 1
            self.last_size = end - pos
            location = f"record {index}"
            if end - pos > MAX_RECORD_BYTES:
                self._repeated.clear()
                yield _too_long(location, "skipped")
            else:
                item = text[pos:end]
                if not item.isascii():  # its strings hold UTF-8 bytes read as Latin-1
                    yield self._decode_item(window, pos, item, value, location, index)
                elif self._repeated:
                    yield self._repeated_key(location, value)
                else:
                    yield _raw_record((location, index, value))
            index += 1
            separator = _SEPARATOR(text, end)
            if separator is not None:
                pos = separator.end()
                continue
            pos = _SKIP_WHITESPACE(text, end).end()
            while pos == len(text) and not window.eof:
                text, pos = window.more(pos)
                pos = _SKIP_WHITESPACE(text, pos).end()
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos < len(text) and text[pos] == "]":
                break
            else:
                message = "the file ends inside the array" if pos == len(text) else "expected ',' or ']' after a record"
                yield self._array_error(window, pos, index, message)
                return
        yield from self._after_array(window, pos + 1)

    def _decode_item(
        self, window: _Window, pos: int, item: str, value: Any, location: str, index: int
    ) -> RawRecord | Issue:
        """``value``, parsed from ``item`` read as Latin-1, with its strings decoded as UTF-8.

        Non-ASCII bytes can only be inside strings, so decoding each non-ASCII string is enough,
        unless an escape put a non-ASCII character among them: one beyond Latin-1 makes decoding
        fail, one within it (``\\u00e9``) is looked for. Such items, and invalid UTF-8, are
        decoded whole and parsed again.
        """
        decoded = None
        if "\\u00" not in item or _LATIN1_ESCAPE.search(item) is None:
            with contextlib.suppress(UnicodeError):
                decoded = _decode_strings(value)
        if decoded is None:
            self._repeated.clear()
            try:
                text = item.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError as exc:
                return Issue(location, None, f"{window.invalid_utf8(pos + exc.start)}; record skipped")
            try:
                decoded, _ = self._scan(text, 0)  # the structure parsed already; only strings differ
            except RecursionError:  # this frame is one deeper than the first parse's
                return Issue(location, None, "JSON nested too deeply; record skipped")
        if self._repeated:
            return self._repeated_key(location, decoded)
        return _raw_record((location, index, decoded))

    def _after_array(self, window: _Window, pos: int) -> Iterator[Issue]:
        """Only whitespace may follow the closing bracket."""
        text = window.text
        while True:
            pos = _SKIP_WHITESPACE(text, pos).end()
            if pos < len(text):
                yield Issue("file", None, window.syntax_error(pos, "trailing garbage after the array"))
                return
            if window.eof:
                return
            text, pos = window.more(pos)

    def _array_error(self, window: _Window, pos: int, index: int, message: str) -> Issue:
        """The Issue that ends an array: what the scanner found wrong at ``pos``, in words."""
        self.count += 1
        if message.startswith("Unterminated string"):
            message = "a string starting here never ends (the file is truncated, or a quote is missing)"
        elif pos >= len(window.text):
            message = "unexpected end of file (the file is truncated, or a bracket is missing)"
        return Issue(f"record {index}", None, window.syntax_error(pos, message))


_TOO_LONG = b"\x00too long"  # compared by identity: a sentinel, never a line's content


def _too_long(location: str, outcome: str) -> Issue:
    return Issue(location, None, f"record is longer than {_size(MAX_RECORD_BYTES)}, the limit; {outcome}")


def _size(count: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


def _near(excerpt: str) -> str:
    return f"; near '{excerpt}'" if excerpt.strip() else ""


def _lead(line: bytes) -> int:
    """Bytes of whitespace before a line's record, so columns count from the start of the line."""
    return len(line) - len(line.lstrip(_WHITESPACE))


class _Chunks:
    """Reads a binary stream a chunk at a time, until it runs dry.

    The first chunk is small and each next one twice as large, up to ``CHUNK_BYTES``: the
    first records of a remote stream arrive after a few kilobytes, and a large file is
    still read in large chunks.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._size = FIRST_CHUNK_BYTES
        self.eof = False

    def read(self, size: int | None = None) -> bytes:
        """The next chunk (at least ``size`` bytes if given), b"" once the stream is exhausted."""
        if self.eof:
            return b""
        if size is None:
            size, self._size = self._size, min(CHUNK_BYTES, 2 * self._size)
        data = self._raw.read(size)
        if isinstance(data, str):
            raise TypeError("the dataset source must be opened in binary mode, got text")
        if not data:
            self.eof = True
            return b""
        return bytes(data)

    def read_at_least(self, count: int) -> bytes:
        """At least ``count`` bytes unless the stream is shorter (a stream may return fewer than asked)."""
        data = self.read()
        while len(data) < count and not self.eof:
            data += self.read()
        return data


class _Window:
    """A JSON array's text, from the item being parsed up to what was read so far, decoded as Latin-1.

    Latin-1 maps each byte to one character, so decoding costs a copy (UTF-8 into a wide string
    costs a hundred times more), positions in the text are byte offsets, and JSON's structure,
    all ASCII, parses the same; items holding non-ASCII bytes are decoded as UTF-8 afterwards.
    ``more(pos)`` drops the text before ``pos`` and appends what the stream holds next: at
    least a chunk, and as much again as the text kept, so a record needing several refills is
    parsed a logarithmic number of times. Lines are counted as chunks arrive; a position's line
    and column are worked out only for a message.
    """

    def __init__(self, chunks: _Chunks, data: bytes, line: int) -> None:
        self._chunks = chunks
        self.text = data.decode("latin-1")
        self.eof = False
        self._end_line = line + _count_newlines(data)  # line number at the end of the text
        self._column_base = 0  # bytes of the line at text[0] that were dropped before it

    def more(self, pos: int) -> tuple[str, int]:
        """Drop the text before ``pos``, append the next text; return (text, new position of ``pos``)."""
        newline = self.text.rfind("\n", 0, pos)
        self._column_base = pos - newline - 1 if newline >= 0 else self._column_base + pos
        kept = self.text[pos:]
        grow = min(len(kept), MAX_RECORD_BYTES + 1 - len(kept))  # double an unfinished record, to just past the limit
        data = self._chunks.read(grow if grow > CHUNK_BYTES else None)
        self.eof = not data
        self._end_line += _count_newlines(data)
        self.text = kept + data.decode("latin-1")
        return self.text, 0

    def line_at(self, pos: int) -> int:
        return self._end_line - self.text.count("\n", pos)

    def column_at(self, pos: int) -> int:
        """1-based byte column of ``pos`` in its line."""
        newline = self.text.rfind("\n", 0, pos)
        return pos - newline if newline >= 0 else self._column_base + pos + 1

    def invalid_utf8(self, pos: int) -> str:
        """Where the byte at ``pos``, which does not continue valid UTF-8, is in the file."""
        return f"invalid UTF-8 at line {self.line_at(pos)}, byte {self.column_at(pos)} (0x{ord(self.text[pos]):02x})"

    def syntax_error(self, pos: int, message: str) -> str:
        """The message for malformed JSON at ``pos``; invalid UTF-8 there is named as such."""
        if pos < len(self.text) and not self.text[pos].isascii():
            raw = self.text[pos : pos + 4].encode("latin-1")
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.start == 0:
                    return f"{self.invalid_utf8(pos)}; stopped reading"
        near = self.text[pos : pos + 40].encode("latin-1").decode("utf-8", "replace").split("\n")[0]
        return f"malformed JSON at line {self.line_at(pos)}: {message}{_near(near)}"


def _count_newlines(data: bytes) -> int:
    if b"\n" not in data:  # memchr: an array written on one line costs nothing more
        return 0
    import numpy as np  # deferred: keeps importing dpo_lib.data cheap; 4x faster than bytes.count here

    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A))


def _decode_strings(value: Any) -> Any:
    """``value`` with each non-ASCII string (and key) in it decoded from the UTF-8 bytes it holds as
    Latin-1 characters; containers are changed in place. UnicodeDecodeError if some are not UTF-8."""
    if isinstance(value, str):
        return value if value.isascii() else value.encode("latin-1").decode("utf-8")
    stack = [value]
    while stack:
        container = stack.pop()
        if isinstance(container, dict):
            if not all(map(str.isascii, container)):  # rare: rebuild it with its keys decoded
                items = list(container.items())
                container.clear()
                container.update((_decode_strings(key), child) for key, child in items)
            children: Iterable[tuple[Any, Any]] = container.items()
        else:
            children = enumerate(container)
        for key, child in children:
            if isinstance(child, str):
                if not child.isascii():
                    container[key] = child.encode("latin-1").decode("utf-8")
            elif isinstance(child, (dict, list)):
                stack.append(child)
    return value


def _object_builder(repeated: list[str]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """The scanner's object_pairs_hook: build each JSON object, and when one names a key twice
    (``json`` would silently keep the last value), mark it and add the key to ``repeated``."""

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                break
            seen.add(key)
        repeated.append(key)
        marked = _RepeatedKeys(obj)
        marked.key = key
        return marked

    return build


def _containers(value: Any) -> Iterator[tuple[str, dict[str, Any] | list[Any]]]:
    """(path, container) for ``value`` and every object or list inside it; paths read ``chosen[0].content``."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, container = stack.pop()
        if not isinstance(container, (dict, list)):
            continue
        yield path, container
        items = container.items() if isinstance(container, dict) else enumerate(container)
        children = [(_child_path(path, key), child) for key, child in items if isinstance(child, (dict, list))]
        stack.extend(reversed(children))


def _child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _wide_without_bom(head: bytes) -> str | None:
    """'UTF-16 (little-endian)' and the like when the first bytes are ASCII characters in UTF-16 or UTF-32.

    A JSON file starts with ASCII (whitespace, a bracket or brace), which UTF-16 writes as the character
    and a NUL byte (``[\\x00{\\x00``, or ``\\x00[\\x00{`` big-endian) and UTF-32 as the character and three
    NUL bytes. UTF-8 JSON never holds NUL bytes.
    """
    for width, encoding in ((4, "UTF-32"), (2, "UTF-16")):
        units = [head[i : i + width] for i in range(0, len(head) - width + 1, width)][:4]
        if len(units) < 2:
            continue
        zeros = bytes(width - 1)
        if all(unit[1:] == zeros and 0 < unit[0] < 0x80 for unit in units):
            return f"{encoding} (little-endian)"
        if all(unit[:-1] == zeros and 0 < unit[-1] < 0x80 for unit in units):
            return f"{encoding} (big-endian)"
    return None


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


def _container_mismatch(expected: str) -> str:
    if expected == ARRAY:
        return (
            "format 'json' needs a JSON array ('[' ...) at the top level, but the file starts with "
            "'{' (JSON Lines? use format 'jsonl')"
        )
    return (
        "format 'jsonl' needs one JSON object per line, but the file starts with '[' (a JSON array? use format 'json')"
    )
