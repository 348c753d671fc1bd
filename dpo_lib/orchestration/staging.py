"""Staging: the run's dataset copied into its own folder, validated there (one read of remote storage),
and a manifest with its sha256 that later tasks trust; and the folder's removal.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

from dpo_lib.settings import Settings
from dpo_lib.spec import STAGED_DATASET, Manifest, RunSpec, SpecError

log = logging.getLogger(__name__)


def stage_dataset(spec: RunSpec, settings: Settings) -> Manifest:
    """Download the dataset to ``spec.dataset_path``, validate the copy, and write the manifest.

    Idempotent: a retry downloads again over the same names. A storage outage or a transfer that went
    wrong raises :class:`~dpo_lib.storage.StorageUnavailable` or :class:`~dpo_lib.storage.TransferCorrupted`
    (the task retries it); anything the user must fix (a missing object, invalid records, too few pairs)
    raises :class:`SpecError`. On any failure the
    staged copy is removed, so nothing half-staged is left for anyone to find.
    """
    from dpo_lib.data.dataset import open_dataset
    from dpo_lib.data.split import split_problem
    from dpo_lib.storage import StorageError, StorageUnavailable, TransferCorrupted, get_storage

    uri, staged = spec.request.dataset_uri, Path(spec.dataset_path)
    _check_inside(Path(spec.staging_dir), settings.staging_root)
    try:
        try:
            with get_storage(uri, local_root=settings.local_storage_root) as storage:
                download = storage.download(uri, staged)
        except (StorageUnavailable, TransferCorrupted):
            raise  # an outage or a damaged transfer, not a bad request: the task's retries may outlast it
        except StorageError as exc:
            raise SpecError([("dataset_uri", f"cannot read the dataset: {exc}")], "invalid dataset") from None
        report = open_dataset(staged, name=uri).validate()
        if not report.ok:
            raise SpecError([("dataset_uri", f"{uri} is not a valid preference dataset\n{report.format_text()}")],
                            "invalid dataset")  # fmt: skip
        eval_fraction = spec.train.datasets[STAGED_DATASET].eval_fraction
        if problem := split_problem(report.record_count, eval_fraction):
            raise SpecError([("dataset_uri", f"{uri} {problem}")], "invalid dataset")
        manifest = Manifest(
            run_id=spec.run_id,
            dataset_uri=uri,
            staged_path=str(staged),
            size=download.size,
            sha256=download.sha256,
            format=report.format,
            record_count=report.record_count,
            warning_count=report.warning_count,
            staged_at=datetime.now(UTC).isoformat(),
        )
        from dpo_lib.io import atomic_write_json

        atomic_write_json(spec.manifest_path, manifest.model_dump(mode="json"))
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    for warning in report.warnings:
        log.warning("dataset: %s", warning)
    log.info("staged %s -> %s (%d records, %s, sha256 %s)", uri, staged, report.record_count, report.format,
             download.sha256)  # fmt: skip
    return manifest


def cleanup_staging(spec: RunSpec, settings: Settings) -> bool:
    """Remove this run's staging folder (only it). Returns whether there was one."""
    staging_dir = Path(spec.staging_dir)
    _check_inside(staging_dir, settings.staging_root)
    existed = staging_dir.exists()
    shutil.rmtree(staging_dir, ignore_errors=True)
    log.info("%s %s", "removed" if existed else "nothing staged at", staging_dir)
    return existed


def _check_inside(path: Path, root: Path) -> None:
    if not path.resolve().is_relative_to(root.resolve()):
        raise SpecError([("staging_dir", f"{path} is outside the staging root {root}")], "invalid run spec")
