"""Length statistics, duplicates and length outliers of a dataset, gathered in one streaming pass in
memory that does not grow with the number of records (how: docs/datasets.md#statistics).
"""

from __future__ import annotations

import heapq
import math
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from itertools import islice
from operator import attrgetter, itemgetter
from typing import Any

from dpo_lib.data.fields import FIELDS
from dpo_lib.data.issues import MAX_KEPT_ISSUES
from dpo_lib.data.pair import PreferencePair, Text

PERCENTILES = (50, 90, 99)
OUTLIER_FACTOR = 5
OUTLIER_MIN_RECORDS = 100
LONG_TEXT_CHARS = 100_000
EXACT_LENGTHS = 1 << 17
"""Lengths below this many characters are counted exactly; it must exceed ``LONG_TEXT_CHARS``
so that outlier counts are exact too."""
DUPLICATE_CHECK_RECORDS = 1 << 21
"""How many valid records (2,097,152) the duplicate check covers: 32 MiB of fingerprints."""

_SIGNIFICANT_BITS = 10  # a long length's bucket keeps its 10 leading bits: 512 buckets per doubling
_TOP_CLASS = LONG_TEXT_CHARS // OUTLIER_FACTOR  # length classes a threshold can tell apart: 0 .. _TOP_CLASS
assert OUTLIER_FACTOR * _TOP_CLASS == LONG_TEXT_CHARS < EXACT_LENGTHS


_CONTENT = itemgetter("content")
_ROLE_AND_CONTENT = itemgetter("role", "content")
_PAIR_FIELDS = tuple(map(attrgetter, FIELDS))
# Applied to a conversation by map(), these stay in C: the contents, their lengths, the (role, content) pairs.
_CONTENTS, _LENGTHS, _ROLES_AND_CONTENTS = partial(map, _CONTENT), partial(map, len), partial(map, _ROLE_AND_CONTENT)


def text_length(value: Text) -> int:
    """Characters of a text, or of all message contents of a conversation."""
    if isinstance(value, str):
        return len(value)
    return sum(map(len, map(_CONTENT, value)))


def _messages_key(messages: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple(map(_ROLE_AND_CONTENT, messages))


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
    """Counts and length percentiles of a dataset; lengths cover valid records only.

    ``duplicates_checked`` says how many valid records the duplicate count covers: all of
    them, unless there were more than ``DUPLICATE_CHECK_RECORDS``.
    """

    format: str | None
    record_count: int
    valid_count: int
    invalid_count: int
    duplicate_count: int
    lengths: dict[str, LengthStats] = field(default_factory=dict)
    duplicates_checked: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lengths"] = {name: stats.to_dict() for name, stats in self.lengths.items()}
        return data

    def format_text(self) -> str:
        """A few lines for humans: counts, then one line of length percentiles per field."""
        among = f" among the first {self.duplicates_checked}" if self.duplicates_checked < self.valid_count else ""
        lines = [
            f"records: {self.record_count} ({self.valid_count} valid, {self.invalid_count} invalid), "
            f"duplicates: {self.duplicate_count}{among}"
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


class _FieldLengths:
    """One field's lengths: a histogram, the maximum, and the records that may turn out outliers."""

    def __init__(self) -> None:
        self.counts = array("q", bytes(8 * 1024))  # grows, by doubling, to the longest length seen
        self.long_counts: dict[int, int] = {}  # bucket (a length with its low bits cleared) -> count
        self.longest_bucketed = 0  # the exact maximum of the lengths counted in buckets
        self.keep_above = -1  # lengths above this make a record an outlier candidate
        self.candidates = (array("q"), array("q"))  # positions, lengths, in file order
        self._longest: list[int] = []  # min-heap of the MAX_KEPT_ISSUES largest candidate classes

    def add(self, position: int, length: int) -> None:
        if length < len(self.counts):
            self.counts[length] += 1
        else:
            self._add_long(length)
        if length > self.keep_above:
            self._keep(position, length)

    def add_many(self, positions: Sequence[int], lengths: Iterable[int]) -> None:
        """``add`` for a batch: one histogram update, and a look at the few records that may be outliers."""
        import numpy as np

        values = np.fromiter(lengths, dtype=np.int64, count=len(positions))
        longest = int(values.max())
        if longest >= len(self.counts):  # rare: add() grows the histogram or buckets the length
            for position, length in zip(positions, values.tolist(), strict=True):
                self.add(position, length)
            return
        shortest = int(values.min())
        np.frombuffer(self.counts, dtype=np.int64)[shortest : longest + 1] += np.bincount(values - shortest)
        if longest > self.keep_above:
            for row in np.flatnonzero(values > self.keep_above).tolist():
                if values[row] > self.keep_above:  # keep_above rises as candidates are kept
                    self._keep(positions[row], int(values[row]))

    def _add_long(self, length: int) -> None:
        if length < EXACT_LENGTHS:
            size = min(EXACT_LENGTHS, 1 << length.bit_length())
            self.counts.extend(array("q", bytes(8 * (size - len(self.counts)))))
            self.counts[length] += 1
        else:
            self.longest_bucketed = max(self.longest_bucketed, length)
            low_bits = length.bit_length() - _SIGNIFICANT_BITS
            bucket = length >> low_bits << low_bits
            self.long_counts[bucket] = self.long_counts.get(bucket, 0) + 1

    def _keep(self, position: int, length: int) -> None:
        self.candidates[0].append(position)
        self.candidates[1].append(length)
        heapq.heappush(self._longest, min((length - 1) // OUTLIER_FACTOR, _TOP_CLASS))
        if len(self._longest) > MAX_KEPT_ISSUES:
            heapq.heappop(self._longest)
        if len(self._longest) == MAX_KEPT_ISSUES:  # from now on only a longer class can matter
            floor = self._longest[0]
            self.keep_above = OUTLIER_FACTOR * (floor + 1) if floor < _TOP_CLASS else sys.maxsize

    def histogram(self) -> tuple[Any, Any]:
        """(distinct lengths, ascending; how many records have each), long ones as their bucket."""
        import numpy as np  # deferred: keeps importing dpo_lib.data cheap for DAG parsing

        counts = np.frombuffer(self.counts, dtype=np.int64)
        exact = np.flatnonzero(counts)
        buckets = sorted(self.long_counts)
        values = np.concatenate((exact, np.array(buckets, dtype=np.int64)))
        tally = np.concatenate((counts[exact].astype(np.int64), [self.long_counts[b] for b in buckets]))
        return values, tally.astype(np.int64)

    def stats(self) -> LengthStats:
        values, tally = self.histogram()
        total = int(tally.sum())
        if not total:
            return LengthStats(None, None, None, None)
        ranks = tally.cumsum()
        p50, p90, p99 = (_percentile(values, ranks, total, q) for q in PERCENTILES)
        return LengthStats(p50, p90, p99, self.longest_bucketed if self.long_counts else int(values[-1]))

    def threshold(self) -> int:
        """The outlier threshold: a length above it is an outlier (module docstring)."""
        values, tally = self.histogram()
        total = int(tally.sum())
        if total < OUTLIER_MIN_RECORDS:
            return LONG_TEXT_CHARS
        p99 = _value_at(values, tally.cumsum(), math.floor((total - 1) * (99 / 100)))
        return min(LONG_TEXT_CHARS, int(OUTLIER_FACTOR * p99))

    def count_above(self, threshold: int) -> int:
        """How many lengths exceed ``threshold`` (below ``EXACT_LENGTHS``, so the count is exact)."""
        values, tally = self.histogram()
        return int(tally[values > threshold].sum())


def _value_at(values: Any, ranks: Any, rank: int) -> int:
    """The ``rank``-th smallest length (0-based), from distinct values and their cumulative counts."""
    return int(values[int(ranks.searchsorted(rank, side="right"))])


def _percentile(values: Any, ranks: Any, total: int, q: int) -> float:
    """numpy's default percentile (linear interpolation between the closest ranks), from a histogram."""
    index = (total - 1) * (q / 100)
    below = math.floor(index)
    a = _value_at(values, ranks, below)
    b = _value_at(values, ranks, min(below + 1, total - 1))
    weight = index - below
    return float(b - (b - a) * (1 - weight)) if weight >= 0.5 else float(a + (b - a) * weight)


class StatsTracker:
    """Accumulates what the statistics need during a pass, in memory bounded whatever the record count."""

    def __init__(self) -> None:
        self.valid_count = 0
        self._fields = tuple(_FieldLengths() for _ in FIELDS)
        self._hashes = array("q")
        self._positions = array("q")
        self._duplicates: tuple[int, tuple[int, list[tuple[int, int]]]] | None = None  # (records, result)

    def add(self, position: int, pair: PreferencePair) -> None:
        """Record one valid pair found at ``position`` (array index or line number)."""
        self.valid_count += 1
        prompt, chosen, rejected = pair.prompt, pair.chosen, pair.rejected
        if isinstance(prompt, str):  # a text format: all three are strings
            prompt_length, chosen_length, rejected_length = len(prompt), len(chosen), len(rejected)
            key: tuple[Any, ...] = (prompt, chosen, rejected)
        else:
            prompt_length, chosen_length, rejected_length = map(text_length, (prompt, chosen, rejected))
            key = (_messages_key(prompt), _messages_key(chosen), _messages_key(rejected))
        by_prompt, by_chosen, by_rejected = self._fields
        by_prompt.add(position, prompt_length)
        by_chosen.add(position, chosen_length)
        by_rejected.add(position, rejected_length)
        if len(self._hashes) < DUPLICATE_CHECK_RECORDS:
            self._hashes.append(hash(key))  # per process: string hashes are keyed per process
            self._positions.append(position)

    def add_batch(self, positions: list[int], pairs: list[PreferencePair]) -> None:
        """``add`` for a batch of pairs of one format, in a few passes of builtins over the batch."""
        self.valid_count += len(pairs)
        fields = [list(map(getter, pairs)) for getter in _PAIR_FIELDS]
        if isinstance(fields[0][0], str):
            lengths = [map(len, texts) for texts in fields]
            keys: Iterable[tuple[Any, ...]] = zip(*fields, strict=True)
        else:  # per conversation: the sum of its contents' lengths, and its (role, content) pairs
            lengths = [map(sum, map(_LENGTHS, map(_CONTENTS, conversations))) for conversations in fields]
            keys = zip(*(map(tuple, map(_ROLES_AND_CONTENTS, conversations)) for conversations in fields), strict=True)
        for field_lengths, values in zip(self._fields, lengths, strict=True):
            field_lengths.add_many(positions, values)
        room = DUPLICATE_CHECK_RECORDS - len(self._hashes)
        if room > 0:
            self._hashes.extend(map(hash, islice(keys, room)))
            self._positions.extend(positions[:room])

    @property
    def duplicates_checked(self) -> int:
        """How many valid records the duplicate check covers (all, up to ``DUPLICATE_CHECK_RECORDS``)."""
        return len(self._hashes)

    def length_stats(self) -> dict[str, LengthStats]:
        return {name: lengths.stats() for name, lengths in zip(FIELDS, self._fields, strict=True)}

    def duplicates(self) -> tuple[int, list[tuple[int, int]]]:
        """How many checked records repeat an earlier one, and the first ``MAX_KEPT_ISSUES`` of
        them in file order as (position, position of the first identical record)."""
        if self._duplicates is None or self._duplicates[0] != len(self._hashes):
            self._duplicates = (len(self._hashes), self._find_duplicates(MAX_KEPT_ISSUES))
        return self._duplicates[1]

    def _find_duplicates(self, limit: int) -> tuple[int, list[tuple[int, int]]]:
        import numpy as np

        hashes = np.frombuffer(self._hashes, dtype=np.int64)
        if len(hashes) < 2:
            return 0, []
        order = np.argsort(hashes, kind="stable")  # equal fingerprints stay in file order
        sorted_hashes = hashes[order]
        repeats = sorted_hashes[1:] == sorted_hashes[:-1]
        del sorted_hashes
        repeated_rows = order[1:][repeats]  # every record but the first of its fingerprint
        del order, repeats
        if len(repeated_rows) > limit:
            first_repeats = np.sort(np.partition(repeated_rows, limit - 1)[:limit])
        else:
            first_repeats = np.sort(repeated_rows)
        positions = np.frombuffer(self._positions, dtype=np.int64)
        found = [(int(positions[row]), int(positions[np.argmax(hashes == hashes[row])])) for row in first_repeats]
        return len(repeated_rows), found

    def outliers(self, limit: int) -> tuple[int, list[Outlier]]:
        """How many field lengths break the outlier rule, and the first ``limit`` in file order."""
        if not self.valid_count:
            return 0, []
        count = 0
        found: list[tuple[int, int, Outlier]] = []
        for rank, (name, lengths) in enumerate(zip(FIELDS, self._fields, strict=True)):
            threshold = lengths.threshold()
            count += lengths.count_above(threshold)
            positions, sizes = lengths.candidates
            named = ((p, n) for p, n in zip(positions, sizes, strict=True) if n > threshold)
            for position, size in islice(named, limit):
                found.append((position, rank, Outlier(position, name, size, threshold)))
        found.sort(key=lambda item: item[:2])
        return count, [outlier for *_, outlier in found[:limit]]

    def summarize(self, *, format: str | None, record_count: int) -> DatasetStats:
        return DatasetStats(
            format=format,
            record_count=record_count,
            valid_count=self.valid_count,
            invalid_count=max(0, record_count - self.valid_count),
            duplicate_count=self.duplicates()[0],
            lengths=self.length_stats(),
            duplicates_checked=self.duplicates_checked,
        )
