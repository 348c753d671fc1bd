"""Concrete datasets, one per format, and :func:`open_dataset`, the one way callers get one.

All formats share one implementation: reading the container and checking records is the
same streaming pass (``validation.DatasetScan``) with a different record parser. The
per-format classes exist so code can name the format it expects; :class:`PreferenceDataset`
with no format detects it from the first record during the pass itself, so detection never
costs an extra read of (possibly remote) data.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from typing import ClassVar

from dpo_lib.data.formats import CONVERSATIONAL, HH, JSON, JSONL, check_format_name
from dpo_lib.data.interface import DatasetError, PreferenceDatasetInterface, Source, source_name
from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.stats import DatasetStats
from dpo_lib.data.validation import DatasetScan, ValidationReport


class PreferenceDataset(PreferenceDatasetInterface):
    """A dataset in ``format`` (one of ``formats.FORMATS``), or detected from the data if None.

    The result of the first full pass (validate, get_stats or load) is kept, so asking for
    the report and then the statistics reads the data once. Create a new object to re-read
    a source that changed.
    """

    format_name: ClassVar[str | None] = None

    def __init__(self, source: Source, format: str | None = None, *, name: str | None = None) -> None:
        format = format if format is not None else self.format_name
        check_format_name(format)
        self.source = source
        self.name = name or source_name(source)
        self._format = format
        self._result: tuple[ValidationReport, DatasetStats] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, format={self._format!r})"

    @property
    def format(self) -> str | None:
        """The forced format, or the detected one once a pass has seen a record (else None)."""
        return self._format

    def _scan(self) -> DatasetScan:
        return DatasetScan(self.source, self._format, name=self.name)

    def _finish(self, scan: DatasetScan) -> tuple[ValidationReport, DatasetStats]:
        self._result = scan.finish()
        self._format = self._format or scan.format
        return self._result

    def iter_pairs(self) -> Iterator[PreferencePair]:
        """Stream the pairs; raises :class:`DatasetError` once an invalid record is met."""
        scan = self._scan()
        with closing(scan.pairs()) as pairs:
            for _, pair in pairs:
                if scan.log.error_count:
                    break
                yield pair
        if not scan.log.error_count:  # a complete pass: add the whole-dataset checks
            self._finish(scan)
            if not scan.log.error_count:
                return
        raise DatasetError.from_issues(self.name, scan.log.errors, scan.log.error_count)

    def load(self) -> list[PreferencePair]:
        """Every pair in file order; raises :class:`DatasetError` naming the first problems."""
        scan = self._scan()
        pairs = [pair for _, pair in scan.pairs()]
        report, _ = self._finish(scan)
        if not report.ok:
            raise DatasetError.from_issues(self.name, report.errors, report.error_count)
        return pairs

    def _full_pass(self) -> tuple[ValidationReport, DatasetStats]:
        if self._result is None:
            scan = self._scan()
            for _ in scan.pairs():
                pass
            self._finish(scan)
        assert self._result is not None
        return self._result

    def validate(self) -> ValidationReport:
        return self._full_pass()[0]

    def get_stats(self) -> DatasetStats:
        return self._full_pass()[1]


class JsonArrayDataset(PreferenceDataset):
    """A JSON array of ``{prompt, chosen, rejected}`` string records (the "novalto" format)."""

    format_name = JSON

    def __init__(self, source: Source, *, name: str | None = None) -> None:
        super().__init__(source, JSON, name=name)


class JsonLinesDataset(PreferenceDataset):
    """JSON Lines of ``{prompt, chosen, rejected}`` string records."""

    format_name = JSONL

    def __init__(self, source: Source, *, name: str | None = None) -> None:
        super().__init__(source, JSONL, name=name)


class HHDataset(PreferenceDataset):
    """Anthropic HH ``{chosen, rejected}`` dialogues, in a JSON array or JSON Lines."""

    format_name = HH

    def __init__(self, source: Source, *, name: str | None = None) -> None:
        super().__init__(source, HH, name=name)


class ConversationalDataset(PreferenceDataset):
    """Message-list records (explicit or implicit prompt), in a JSON array or JSON Lines."""

    format_name = CONVERSATIONAL

    def __init__(self, source: Source, *, name: str | None = None) -> None:
        super().__init__(source, CONVERSATIONAL, name=name)


_BY_FORMAT: dict[str | None, type[PreferenceDataset]] = {
    None: PreferenceDataset,
    JSON: JsonArrayDataset,
    JSONL: JsonLinesDataset,
    HH: HHDataset,
    CONVERSATIONAL: ConversationalDataset,
}


def open_dataset(source: Source, format: str | None = None, *, name: str | None = None) -> PreferenceDataset:
    """The dataset at ``source`` (a path or a callable returning a binary stream).

    ``format`` forces one of ``json``, ``jsonl``, ``hh``, ``conversational``; None detects it
    from the data. Nothing is read until a method is called. Raises ValueError for an
    unknown format name.
    """
    check_format_name(format)
    cls = _BY_FORMAT[format]
    return cls(source, name=name)
