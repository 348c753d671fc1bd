"""Streaming validation: one pass over a source that yields the valid pairs and, at the end,
a :class:`ValidationReport` and :class:`~dpo_lib.data.stats.DatasetStats`.

Memory stays bounded: records are read one at a time (``records.py``), only the first issues are
kept (``issues.py``) and statistics have a bounded size (``stats.py``). Errors make a dataset
unusable; warnings (duplicates, length outliers) do not block training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from dpo_lib.data.fields import json_type
from dpo_lib.data.formats import (
    BatchParser,
    RecordParser,
    batch_parser_for,
    default_format,
    detect_format,
    parser_for,
    required_container,
)
from dpo_lib.data.interface import Source, open_source
from dpo_lib.data.issues import ERROR, WARNING, Issue, IssueLog
from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.records import RawRecord, RecordStream
from dpo_lib.data.stats import DatasetStats, StatsTracker

BATCH_RECORDS = 64
"""Most records checked as one batch: enough to make the work per batch negligible, few enough
for the batch to stay in the CPU's caches (256 was slower). Batches start at one record and
double, so the first pairs of a stream arrive at once."""
BATCH_BYTES = 1024 * 1024
"""A batch is checked as soon as its records took this many bytes of the file."""

_LOCATION, _POSITION, _VALUE = itemgetter(0), itemgetter(1), itemgetter(2)


@dataclass
class ValidationReport:
    """What validation found. ``errors``/``warnings`` hold the first issues; the counts are totals."""

    format: str | None
    record_count: int
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0
    source: str | None = None

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings do not make a dataset invalid)."""
        return self.error_count == 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for ``--json`` output and Airflow XCom)."""
        return {
            "ok": self.ok,
            "source": self.source,
            "format": self.format,
            "record_count": self.record_count,
            "error_count": self.error_count,
            "warning_count": self.warning_count,
            "errors": [issue.to_dict() for issue in self.errors],
            "warnings": [issue.to_dict() for issue in self.warnings],
        }

    def format_text(self) -> str:
        """A summary line, then one line per kept error and warning, then what was left out."""
        status = "valid" if self.ok else "INVALID"
        lines = [
            f"{self.source or 'dataset'}: {status} ({self.format or 'unknown format'}, "
            f"{self.record_count} records): {_plural(self.error_count, 'error')}, "
            f"{_plural(self.warning_count, 'warning')}"
        ]
        lines.extend(str(issue) for issue in self.errors)
        if self.error_count > len(self.errors):
            lines.append(f"... and {self.error_count - len(self.errors)} more errors")
        lines.extend(f"warning: {issue}" for issue in self.warnings)
        if self.warning_count > len(self.warnings):
            lines.append(f"... and {self.warning_count - len(self.warnings)} more warnings")
        return "\n".join(lines)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class DatasetScan:
    """One streaming pass over ``source``.

    Iterate :meth:`pairs` to get ``(location, pair)`` for every valid record while problems
    accumulate in ``log``; then :meth:`finish` adds the whole-dataset checks (empty dataset,
    duplicates, outliers) and returns the report and statistics.
    """

    def __init__(self, source: Source, format: str | None = None, *, name: str | None = None) -> None:
        self._source = source
        self.format = format
        self.name = name
        self.container: str | None = None
        self.record_count = 0
        self.log = IssueLog()
        self.tracker = StatsTracker()

    def pairs(self) -> Iterator[tuple[str, PreferencePair]]:
        """Yield ``(location, pair)`` per valid record, in file order; problems go to ``self.log``.

        ``container`` and ``record_count`` are set once the pass is complete.
        """
        parser = parser_for(self.format) if self.format else None
        batch_parser = batch_parser_for(self.format) if self.format else None
        batch: list[RawRecord] = []
        batch_bytes, batch_limit = 0, 1
        with open_source(self._source) as stream:
            records = RecordStream(stream, required_container(self.format))
            for item in records:
                if isinstance(item, Issue) or not isinstance(item.value, dict):
                    yield from self._check(batch, parser, batch_parser)  # the records before it come first
                    if isinstance(item, Issue):
                        self.log.add(item)
                    else:
                        self.log.error(item.location, None, f"must be a JSON object, found {json_type(item.value)}")
                    continue
                if parser is None:  # detect from the first record object
                    self.format = detect_format(item.value, records.container)
                    parser, batch_parser = parser_for(self.format), batch_parser_for(self.format)
                batch.append(item)
                batch_bytes += records.last_size
                if len(batch) >= batch_limit or batch_bytes >= BATCH_BYTES:
                    yield from self._check(batch, parser, batch_parser)
                    batch_bytes, batch_limit = 0, min(2 * batch_limit, BATCH_RECORDS)
            yield from self._check(batch, parser, batch_parser)
            self.container = records.container
            self.record_count = records.count

    def _check(
        self, batch: list[RawRecord], parser: RecordParser | None, batch_parser: BatchParser | None
    ) -> Iterator[tuple[str, PreferencePair]]:
        """Check the records of ``batch`` (then empty it), yielding ``(location, pair)`` for the valid ones."""
        if not batch:
            return
        assert parser is not None  # a record was seen, so the format is known
        records = batch.copy()
        batch.clear()
        pairs = batch_parser(list(map(_VALUE, records))) if batch_parser is not None and len(records) > 1 else None
        if pairs is not None:
            self.tracker.add_batch(list(map(_POSITION, records)), pairs)
            yield from zip(map(_LOCATION, records), pairs, strict=True)
            return
        for location, position, value in records:
            problems: list[Issue] = []
            try:
                pair = parser(value, location, problems)
            except RecursionError:  # pathological nesting inside a field
                problems.append(Issue(location, None, "nested too deeply to check"))
            if problems:
                for problem in problems:
                    self.log.add(problem)
            elif pair is not None:
                self.tracker.add(position, pair)
                yield location, pair

    def finish(self) -> tuple[ValidationReport, DatasetStats]:
        """Whole-dataset checks after the pass; call once :meth:`pairs` is exhausted."""
        if self.record_count == 0 and self.log.error_count == 0:
            self.log.error("file", None, "dataset is empty: no records found")
        self._warn_duplicates()
        self._warn_outliers()
        fmt = self.format or default_format(self.container)
        report = ValidationReport(
            format=fmt,
            record_count=self.record_count,
            errors=list(self.log.errors),
            warnings=list(self.log.warnings),
            error_count=self.log.error_count,
            warning_count=self.log.warning_count,
            source=self.name,
        )
        return report, self.tracker.summarize(format=fmt, record_count=self.record_count)

    def _label(self, position: int) -> str:
        return f"{'line' if self.container == 'lines' else 'record'} {position}"

    def _warn_duplicates(self) -> None:
        total, found = self.tracker.duplicates()
        shown = found[: self.log.room(WARNING)]
        for position, first in shown:
            message = f"duplicate of {self._label(first)} (same prompt, chosen and rejected)"
            self.log.warning(self._label(position), None, message)
        self.log.count_unkept(WARNING, total - len(shown))
        checked = self.tracker.duplicates_checked
        if checked < self.tracker.valid_count:
            message = (
                f"duplicates were only looked for among the first {checked} valid records "
                "(the check keeps 16 bytes per record in memory)"
            )
            self.log.warning("file", None, message)

    def _warn_outliers(self) -> None:
        total, found = self.tracker.outliers(self.log.room(WARNING))
        for outlier in found:
            message = f"unusually long: {outlier.length} characters (outlier threshold {outlier.threshold})"
            self.log.warning(self._label(outlier.position), outlier.field, message)
        self.log.count_unkept(WARNING, total - len(found))


def validate_source(
    source: Source, format: str | None = None, *, name: str | None = None
) -> tuple[ValidationReport, DatasetStats]:
    """Validate ``source`` in one streaming pass and return the report and statistics."""
    scan = DatasetScan(source, format, name=name)
    for _ in scan.pairs():
        pass
    return scan.finish()


__all__ = ["ERROR", "WARNING", "DatasetScan", "Issue", "ValidationReport", "validate_source"]
