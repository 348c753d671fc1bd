"""The model cache: staged model folders, one per content, shared read-only by every run.

An entry is ``<root>/<content hash>/``, the model's files with their own names, made read-only.
It is written in a hidden temporary folder beside it and renamed into place whole, so an entry
that exists is complete; two runs staging the same model at once each fill their own temporary
folder, the first rename wins and the other run uses the winner's entry. Nothing evicts entries:
delete a folder to reclaim its space (a run that already started from it keeps its files open).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".part"


class ModelCache:
    """Entries under ``root``, named by the content hash of what they hold."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> Path | None:
        """The entry for ``key``, or None when no run has staged that content yet."""
        path = self.path(key)
        return path if path.is_dir() else None

    def add(self, key: str, fill: Callable[[Path], None]) -> tuple[Path, bool]:
        """The entry for ``key``, made by ``fill(folder)`` unless it appears meanwhile.

        Returns the entry and whether this call made it. ``fill`` writes into an empty temporary
        folder; when it raises, the folder is removed and nothing enters the cache.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.path(key)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=TEMP_SUFFIX, dir=self.root))
        try:
            fill(tmp)
            make_read_only(tmp)
            try:
                tmp.rename(target)  # atomic; fails when another run's entry is already there
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not target.is_dir():
                    raise
                return target, False
            return target, True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def remove_abandoned(self, older_than_s: float) -> list[Path]:
        """Remove temporary folders left by a staging that was killed, older than ``older_than_s``."""
        removed = []
        if not self.root.is_dir():
            return removed
        cutoff = time.time() - older_than_s
        for path in self.root.glob(f".*{TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if path.is_dir() and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path)
                    removed.append(path)
        return removed


def make_read_only(folder: Path) -> None:
    """Files 0444, folders 0755: every user reads, no run writes (the owner may still delete)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o444)
        dirnames[:] = [d for d in dirnames if not os.path.islink(os.path.join(dirpath, d))]
