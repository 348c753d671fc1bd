"""``run_dir/history.jsonl``: every logged step of a run, one JSON object a line, readable without MLflow.

Each line is ``{"step": 40, "split": "train", "metrics": {"loss": 0.52, ...}, "time": 1767225600.123}``:
``split`` is ``train`` (the means over the log window) or ``eval`` (a held-out evaluation during
training), ``time`` Unix seconds, and a value that is not a finite number is ``null`` (strict JSON).
A resumed run first drops the lines after the step it resumes from (it logs those steps again), so
each (split, step) appears once; a line cut short by a kill is skipped when read and dropped then.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_text

HISTORY_FILE = "history.jsonl"
SPLITS = ("train", "eval")


def make_event(split: str, step: int, metrics: Mapping[str, Any], at: float | None = None) -> dict[str, Any]:
    """One history line: ``metrics`` as plain floats (``null`` for NaN or infinity), stamped with the time."""
    values = {}
    for name, value in metrics.items():
        number = float(value)
        values[str(name)] = number if math.isfinite(number) else None
    return {"step": int(step), "split": split, "metrics": values, "time": round(time.time() if at is None else at, 3)}


class History:
    """The history file of one run folder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / HISTORY_FILE

    def append(self, event: Mapping[str, Any]) -> None:
        """Add one line (flushed; no fsync: a lost tail is logged again by the resumed run)."""
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event, sort_keys=True, allow_nan=False) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """The events in order, damaged lines skipped, the last one kept where a (split, step) repeats."""
        if not self.path.exists():
            return []
        events: dict[tuple[str, int], dict[str, Any]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            event = _parse(line)
            if event is not None:
                events.pop((event["split"], event["step"]), None)
                events[(event["split"], event["step"])] = event
        return list(events.values())

    def keep_until(self, step: int) -> None:
        """Drop the events after ``step`` and any damaged line: a run resuming at ``step`` logs the rest again."""
        if not self.path.exists():
            return
        kept = [event for event in self.read() if event["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(e, sort_keys=True) + "\n" for e in kept))


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if (
        not isinstance(event, dict)
        or event.get("split") not in SPLITS
        or not isinstance(event.get("step"), int)
        or not isinstance(event.get("metrics"), dict)
    ):
        return None
    return event
