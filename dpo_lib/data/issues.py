"""Problems found in a dataset, and a log that keeps a bounded number of them.

A broken multi-gigabyte file can hold millions of bad records. The report must stay small
enough to print and to pass between Airflow tasks (XCom), yet still say how bad things are,
so the log keeps the first few issues of each severity and counts all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR = "error"
WARNING = "warning"

MAX_KEPT_ISSUES = 50
"""How many errors (and, separately, warnings) a report keeps; the rest are only counted."""


@dataclass(frozen=True)
class Issue:
    """One problem: where it is (``"record 3"``, ``"line 7"`` or ``"file"``), which field, what.

    Records of a JSON array are named by their 0-based index (``record 3`` is ``data[3]``);
    JSON Lines records by their 1-based line number, as editors show them.
    """

    location: str
    field: str | None
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = self.location if self.field is None else f"{self.location}: field '{self.field}'"
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IssueLog:
    """Collects issues during a streaming pass: keeps the first ``cap`` of each kind, counts all."""

    cap: int = MAX_KEPT_ISSUES
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    error_count: int = 0
    warning_count: int = 0

    def add(self, issue: Issue) -> None:
        if issue.severity == WARNING:
            self.warning_count += 1
            if len(self.warnings) < self.cap:
                self.warnings.append(issue)
        else:
            self.error_count += 1
            if len(self.errors) < self.cap:
                self.errors.append(issue)

    def error(self, location: str, field_name: str | None, message: str) -> None:
        self.add(Issue(location, field_name, message, ERROR))

    def warning(self, location: str, field_name: str | None, message: str) -> None:
        self.add(Issue(location, field_name, message, WARNING))

    def count_unkept(self, severity: str, count: int) -> None:
        """Count ``count`` more issues without building them (they are past the cap anyway)."""
        if severity == WARNING:
            self.warning_count += count
        else:
            self.error_count += count

    def room(self, severity: str) -> int:
        """How many more issues of ``severity`` would still be kept."""
        kept = self.warnings if severity == WARNING else self.errors
        return max(0, self.cap - len(kept))
