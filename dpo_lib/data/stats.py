"""Length statistics, duplicate detection and length outliers, gathered in one streaming pass.

Per valid record we keep only three lengths and one 64-bit fingerprint in compact arrays
(32 bytes a record, whatever the record's size), so the pass stays far smaller than the
data. Percentiles, duplicates and outliers are computed from those arrays at the end.

Lengths are in characters; a message list counts the characters of its ``content`` fields.

Outlier rule (a warning, not an error): a field's length is an outlier when it is above
``LONG_TEXT_CHARS`` characters, or, in a dataset of at least ``OUTLIER_MIN_RECORDS`` valid
records, above ``OUTLIER_FACTOR`` times that field's 99th percentile. The percentile rule
needs enough records for the 99th percentile to describe the bulk of the data rather than
the outliers themselves.

Duplicates are records whose prompt, chosen and rejected are all equal; they are found
by a 64-bit BLAKE2 fingerprint (a false match needs billions of records to be likely).
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from dpo_lib.data.fields import FIELDS
from dpo_lib.data.pair import PreferencePair, Text

PERCENTILES = (50, 90, 99)
OUTLIER_FACTOR = 5
OUTLIER_MIN_RECORDS = 100
LONG_TEXT_CHARS = 100_000


def text_length(value: Text) -> int:
    """Characters of a text, or of all message contents of a conversation."""
    if isinstance(value, str):
        return len(value)
    return sum(len(message.get("content", "")) for message in value)


def fingerprint(pair: PreferencePair) -> int:
    """A 64-bit hash of the whole pair, used to spot exact duplicates without storing pairs."""
    encoded = json.dumps([pair.prompt, pair.chosen, pair.rejected], ensure_ascii=False, sort_keys=True)
    digest = hashlib.blake2b(encoded.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@dataclass(frozen=True)
class LengthStats:
    """Percentiles (linear interpolation between ranks, as numpy's default) and maximum, in characters."""

    p50: float | None
    p90: float | None
    p99: float | None
    max: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetStats:
    """Counts and length percentiles of a dataset; lengths cover valid records only."""

    format: str | None
    record_count: int
    valid_count: int
    invalid_count: int
    duplicate_count: int
    lengths: dict[str, LengthStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lengths"] = {name: stats.to_dict() for name, stats in self.lengths.items()}
        return data

    def format_text(self) -> str:
        """A few lines for humans: counts, then one line of length percentiles per field."""
        lines = [
            f"records: {self.record_count} ({self.valid_count} valid, {self.invalid_count} invalid), "
            f"duplicates: {self.duplicate_count}"
        ]
        if self.valid_count:
            lines.append("lengths in characters (p50 / p90 / p99 / max):")
            for name, stats in self.lengths.items():
                values = " / ".join(_number(v) for v in (stats.p50, stats.p90, stats.p99, stats.max))
                lines.append(f"  {name:<9} {values}")
        return "\n".join(lines)


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else str(int(value))


@dataclass(frozen=True)
class Outlier:
    position: int
    field: str
    length: int
    threshold: int


class StatsTracker:
    """Accumulates per-record lengths and fingerprints in compact arrays during a pass."""

    def __init__(self) -> None:
        self._positions = array("q")
        self._lengths = {name: array("q") for name in FIELDS}
        self._hashes = array("Q")
        self._duplicates: tuple[Any, Any] | None = None

    @property
    def valid_count(self) -> int:
        return len(self._positions)

    def add(self, position: int, pair: PreferencePair) -> None:
        """Record one valid pair found at ``position`` (array index or line number)."""
        self._positions.append(position)
        for name in FIELDS:
            self._lengths[name].append(text_length(getattr(pair, name)))
        self._hashes.append(fingerprint(pair))
        self._duplicates = None

    def length_stats(self) -> dict[str, LengthStats]:
        import numpy as np  # deferred: keeps importing dpo_lib.data cheap for DAG parsing

        result = {}
        for name in FIELDS:
            values = np.frombuffer(self._lengths[name], dtype=np.int64) if self.valid_count else None
            if values is None:
                result[name] = LengthStats(None, None, None, None)
                continue
            p50, p90, p99 = (float(v) for v in np.percentile(values, PERCENTILES))
            result[name] = LengthStats(p50, p90, p99, int(values.max()))
        return result

    def _duplicate_arrays(self) -> tuple[Any, Any]:
        """(positions of repeated records, positions of their first occurrences), in file order."""
        import numpy as np

        if self._duplicates is None:
            hashes = np.frombuffer(self._hashes, dtype=np.uint64)
            positions = np.frombuffer(self._positions, dtype=np.int64)
            order = np.argsort(hashes, kind="stable")  # stable: the first occurrence leads each run
            ordered = hashes[order]
            repeat = np.zeros(len(ordered), dtype=bool)
            repeat[1:] = ordered[1:] == ordered[:-1]
            run_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(ordered))))
            dup_rows, first_rows = order[repeat], order[run_start[repeat]]
            by_position = np.argsort(dup_rows, kind="stable")
            self._duplicates = (positions[dup_rows[by_position]], positions[first_rows[by_position]])
        return self._duplicates

    def duplicate_count(self) -> int:
        return 0 if not self.valid_count else len(self._duplicate_arrays()[0])

    def duplicates(self) -> Iterator[tuple[int, int]]:
        """(position, position of the first identical record) for each repeat, in file order."""
        if not self.valid_count:
            return
        dups, firsts = self._duplicate_arrays()
        yield from zip(dups.tolist(), firsts.tolist(), strict=True)

    def outliers(self) -> Iterator[Outlier]:
        """Fields whose length breaks the outlier rule in the module docstring, in file order."""
        import numpy as np

        if not self.valid_count:
            return
        positions = np.frombuffer(self._positions, dtype=np.int64)
        flagged = []
        for name in FIELDS:
            values = np.frombuffer(self._lengths[name], dtype=np.int64)
            threshold = LONG_TEXT_CHARS
            if len(values) >= OUTLIER_MIN_RECORDS:
                p99 = float(np.percentile(values, 99, method="lower"))
                threshold = min(threshold, int(OUTLIER_FACTOR * p99))
            rows = np.nonzero(values > threshold)[0]
            flagged.extend((int(row), name, int(values[row]), threshold) for row in rows)
        flagged.sort(key=lambda item: (item[0], FIELDS.index(item[1])))
        for row, name, length, threshold in flagged:
            yield Outlier(int(positions[row]), name, length, threshold)

    def summarize(self, *, format: str | None, record_count: int) -> DatasetStats:
        return DatasetStats(
            format=format,
            record_count=record_count,
            valid_count=self.valid_count,
            invalid_count=max(0, record_count - self.valid_count),
            duplicate_count=self.duplicate_count(),
            lengths=self.length_stats(),
        )
