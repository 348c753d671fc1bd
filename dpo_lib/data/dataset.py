"""The dataset of every format, and :func:`open_dataset`, the one way callers get one.

One streaming pass (``validation.DatasetScan``) reads and checks the records of each format;
with no format given it detects one from the first record, so detection costs no extra read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

from dpo_lib.data.formats import check_format_name
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

    def __init__(self, source: Source, format: str | None = None, *, name: str | None = None) -> None:
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


def open_dataset(source: Source, format: str | None = None, *, name: str | None = None) -> PreferenceDataset:
    """The dataset at ``source`` (a path or a callable returning a binary stream).

    ``format`` forces one of ``json``, ``jsonl``, ``hh``, ``conversational``; None detects it
    from the data. Nothing is read until a method is called. Raises ValueError for an
    unknown format name.
    """
    return PreferenceDataset(source, format, name=name)
