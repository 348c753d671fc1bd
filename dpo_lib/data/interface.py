"""The contract every preference-dataset format implements, and what a source may be.

Airflow tasks and the CLI only talk to :class:`PreferenceDatasetInterface`, so adding a
format never touches them. ``validate()`` and ``get_stats()`` must stream, because datasets
can be larger than a worker's memory; only ``load()`` materialises every pair, since
training needs them all anyway.

A source is a local path or a zero-argument callable returning a binary file object. The
callable form lets remote storage hand us a stream (``lambda: storage.open_read(uri)``)
without this package knowing about storage, and lets every pass reopen the data.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Union

from dpo_lib.data.pair import PreferencePair

if TYPE_CHECKING:
    from dpo_lib.data.issues import Issue
    from dpo_lib.data.stats import DatasetStats
    from dpo_lib.data.validation import ValidationReport

Source = Union[str, "os.PathLike[str]", Callable[[], IO[bytes]]]

_SHOWN_PROBLEMS = 10


class DatasetError(Exception):
    """The data is invalid. ``issues`` holds the first problems, ``error_count`` how many in all."""

    def __init__(self, message: str, issues: Sequence[Issue] = (), error_count: int | None = None) -> None:
        super().__init__(message)
        self.issues = list(issues)
        self.error_count = len(self.issues) if error_count is None else error_count

    @classmethod
    def from_issues(cls, name: str | None, issues: Sequence[Issue], error_count: int) -> DatasetError:
        """An error whose message names the first problems, so a failed task log says what to fix."""
        shown = [f"  {issue}" for issue in issues[:_SHOWN_PROBLEMS]]
        if error_count > len(shown):
            shown.append(f"  ... and {error_count - len(shown)} more errors")
        plural = "" if error_count == 1 else "s"
        header = f"{name or 'dataset'}: invalid preference dataset ({error_count} error{plural}):"
        return cls("\n".join([header, *shown]), issues, error_count)


def source_name(source: Source) -> str:
    """A printable name for a source: the path, or the callable's name."""
    if callable(source):
        return getattr(source, "__name__", None) or repr(source)
    return os.fspath(source)


@contextmanager
def open_source(source: Source) -> Iterator[IO[bytes]]:
    """Open a source for one binary read pass and close it afterwards.

    A path must name a regular file: a FIFO, device, socket or directory raises an OSError
    saying so, at once (a FIFO without a writer would otherwise block forever).
    """
    if callable(source):
        stream = source()
    else:
        from dpo_lib.storage.local import open_regular_file  # deferred: storage is not needed for streams

        stream = open_regular_file(source)
    try:
        if not hasattr(stream, "read"):
            raise TypeError(f"dataset source callable returned {type(stream).__name__}, not a binary file")
        yield stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


class PreferenceDatasetInterface(ABC):
    """A preference dataset that can be loaded, validated and summarised."""

    @abstractmethod
    def load(self) -> list[PreferencePair]:
        """Every pair, in file order; raises :class:`DatasetError` if any record is invalid."""

    @abstractmethod
    def validate(self) -> ValidationReport:
        """Check every record in one streaming pass; never raises for bad data."""

    @abstractmethod
    def get_stats(self) -> DatasetStats:
        """Record counts, length percentiles and duplicates, in one streaming pass."""

    def iter_pairs(self) -> Iterator[PreferencePair]:
        """Pairs one at a time; implementations should stream instead of loading everything."""
        yield from self.load()
