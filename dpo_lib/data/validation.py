"""Streaming validation: one pass over a source that yields the valid pairs and, at the end,
a :class:`ValidationReport` and :class:`~dpo_lib.data.stats.DatasetStats`.

Validation runs inside Airflow tasks before training, on files that may not fit in memory,
so it reads records one at a time (``records.py``), keeps only the first issues
(``issues.py``) and statistics of bounded size (``stats.py``). Errors make a dataset
unusable; warnings (duplicates, length outliers) are worth a look but do not block training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dpo_lib.data.fields import json_type
from dpo_lib.data.formats import default_format, detect_format, parser_for, required_container
from dpo_lib.data.interface import Source, open_source
from dpo_lib.data.issues import ERROR, WARNING, Issue, IssueLog
from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.records import RecordStream
from dpo_lib.data.stats import DatasetStats, StatsTracker


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
        """Yield ``(location, pair)`` per valid record; problems go to ``self.log``."""
        parser = parser_for(self.format) if self.format else None
        add_issue, track = self.log.add, self.tracker.add
        with open_source(self._source) as stream:
            records = RecordStream(stream, required_container(self.format))
            for item in records:
                self.container, self.record_count = records.container, records.count
                if isinstance(item, Issue):
                    add_issue(item)
                    continue
                location, position, value = item
                if not isinstance(value, dict):
                    self.log.error(location, None, f"must be a JSON object, found {json_type(value)}")
                    continue
                if parser is None:  # detect from the first record object
                    self.format = detect_format(value, records.container)
                    parser = parser_for(self.format)
                problems: list[Issue] = []
                try:
                    pair = parser(value, location, problems)
                except RecursionError:  # pathological nesting inside a field
                    problems.append(Issue(location, None, "nested too deeply to check"))
                if problems:
                    for problem in problems:
                        add_issue(problem)
                elif pair is not None:
                    track(position, pair)
                    yield location, pair
            self.container = records.container
            self.record_count = records.count

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
