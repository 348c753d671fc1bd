"""Staging: a verified copy of the run's dataset in the run's own folder, and its removal."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_json
from dpo_lib.orchestration.request import RequestError
from dpo_lib.orchestration.settings import Settings

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"


def check_dataset(dataset_uri: str, settings: Settings) -> dict[str, Any]:
    """Stream-validate the dataset where it lies; :class:`RequestError` with every problem if invalid.

    Unreachable storage raises :class:`~dpo_lib.storage.StorageUnavailable` instead, so the
    ``validate`` task retries it rather than failing the run as a bad request.
    """
    from dpo_lib.data.dataset import open_dataset
    from dpo_lib.storage import StorageError, StorageUnavailable, get_storage

    storage = None
    try:
        storage = get_storage(dataset_uri, local_root=settings.local_storage_root)  # InvalidURI: another scheme
        report = open_dataset(lambda: storage.open_read(dataset_uri)).validate()
    except StorageUnavailable:
        raise  # an outage, not a bad request: the task's retries may outlast it
    except StorageError as exc:
        raise RequestError(f"dataset_uri: cannot read the dataset: {exc}") from None
    finally:
        if storage is not None:
            storage.close()
    if not report.ok:
        raise RequestError(f"dataset_uri: {dataset_uri} is not a valid preference dataset\n{report.format_text()}")
    return report.to_dict()


def stage_dataset(plan: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Copy the dataset into ``plan["staging_dir"]``, re-validate it, and write ``manifest.json``.

    Idempotent: a retry downloads again over the same names. On failure the run's
    staging folder is removed, so nothing half-staged is left for anyone to find.
    """
    from dpo_lib.data.dataset import open_dataset
    from dpo_lib.storage import get_storage

    staging_dir, uri = Path(plan["staging_dir"]), plan["request"]["dataset_uri"]
    _check_inside(staging_dir, settings.staging_root)
    try:
        staging_dir.mkdir(parents=True, exist_ok=True)
        with get_storage(uri, local_root=settings.local_storage_root) as storage:
            download = storage.download(uri, plan["staged_path"])
        report = open_dataset(plan["staged_path"]).validate()
        if not report.ok:
            raise RequestError(f"the staged copy of {uri} is invalid\n{report.format_text()}")
        manifest = {
            "dataset_uri": uri,
            "staged_path": plan["staged_path"],
            "size": download.size,
            "sha256": download.sha256,
            "format": report.format,
            "record_count": report.record_count,
            "warning_count": report.warning_count,
            "staged_at": datetime.now(UTC).isoformat(),
            "run_id": plan["run_id"],
        }
        atomic_write_json(staging_dir / MANIFEST, manifest)
    except BaseException:
        shutil.rmtree(staging_dir, ignore_errors=True)
        raise
    log.info("staged %s -> %s (%d records, sha256 %s)", uri, plan["staged_path"], report.record_count, download.sha256)
    return manifest


def cleanup_staging(plan: dict[str, Any], settings: Settings) -> bool:
    """Remove this run's staging folder (only it). Returns whether there was one."""
    staging_dir = Path(plan["staging_dir"])
    _check_inside(staging_dir, settings.staging_root)
    existed = staging_dir.exists()
    shutil.rmtree(staging_dir, ignore_errors=True)
    log.info("%s %s", "removed" if existed else "nothing staged at", staging_dir)
    return existed


def _check_inside(path: Path, root: Path) -> None:
    if not path.resolve().is_relative_to(root.resolve()):
        raise RequestError(f"{path} is outside the staging root {root}")
