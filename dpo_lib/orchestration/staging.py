"""Staging: the run's dataset copied into its own folder, validated there (one read of remote storage),
and, when the request names ``model_uri``, its base model staged into the model cache (keyed by
content, so an unchanged model is not downloaded again); a manifest with their digests that later
tasks trust; and the run folder's removal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from dpo_lib.settings import Settings
from dpo_lib.spec import STAGED_DATASET, Manifest, RunSpec, SpecError, StagedModel, Truncation

log = logging.getLogger(__name__)


def stage_inputs(spec: RunSpec, settings: Settings) -> Manifest:
    """The stage task: the dataset (:func:`stage_dataset`), then the model from ``model_uri`` if the
    request names one (:func:`stage_model`) and how truncation cuts the dataset with its tokenizer
    (:func:`measure_truncation`; with a preset, train's first lines report it); one manifest records
    them. Errors as :func:`stage_dataset`'s; on any failure nothing this run staged is left behind (a finished cache entry stays: it is whole).
    """
    from dpo_lib.io import atomic_write_json

    manifest = stage_dataset(spec, settings, write_manifest=False)
    try:
        if spec.request.model_uri is not None:
            model = stage_model(spec, settings)
            truncation = measure_truncation(spec, manifest, Path(model.path))
            manifest = manifest.model_copy(update={"model": model, "truncation": truncation})
        atomic_write_json(spec.manifest_path, manifest.model_dump(mode="json"))
    except BaseException:
        Path(spec.dataset_path).unlink(missing_ok=True)
        if spec.request.model_uri is not None and (link := Path(spec.train.model.name_or_path)).is_symlink():
            link.unlink()
        raise
    return manifest


def measure_truncation(spec: RunSpec, manifest: Manifest, model_folder: Path) -> Truncation | None:
    """How the trainer's truncation cuts the staged dataset with the tokenizer in ``model_folder``,
    logged in one line; None when the tokenizer cannot be loaded or used here (a warning, unless this
    worker has no transformers at all)."""
    from dpo_lib.data.truncation import measure_truncation as measure
    from dpo_lib.models.tokenizer import load_tokenizer

    model = spec.train.model
    config = spec.train.model_copy(update={"model": model.model_copy(update={"name_or_path": str(model_folder)})})
    try:
        tokenizer = load_tokenizer(config.model)
        truncation = measure(spec.dataset_path, tokenizer, config, format=manifest.format)
    except Exception as exc:  # noqa: BLE001 - no transformers on this worker, no tokenizer files: train counts it
        if isinstance(exc, ModuleNotFoundError) and exc.name == "transformers":  # the Airflow image: expected
            log.info("truncation not measured here (no transformers on this worker); train counts it")
        else:
            log.warning("truncation not measured: cannot use the tokenizer of %s here (%s)", model_folder, exc)
        return None
    log.log(logging.WARNING if truncation.truncated_pairs else logging.INFO, "%s", truncation.summary())
    return truncation


def stage_model(spec: RunSpec, settings: Settings) -> StagedModel:
    """The request's ``model_uri`` in the model cache, linked at ``spec.train.model.name_or_path``.

    Before the weights are downloaded, config.json is checked as ``validate`` checks it (max_length,
    the GPUs' memory). Storage outages and damaged transfers pass through to be retried; a folder
    that is not a model, or cannot be read, is a :class:`SpecError` naming ``model_uri``.
    """
    from dpo_lib.models.cache import ModelCache
    from dpo_lib.models.preflight import check_config
    from dpo_lib.models.stage import stage_model as stage_into_cache
    from dpo_lib.storage import StorageError, StorageUnavailable, TransferCorrupted

    uri = spec.request.model_uri
    assert uri is not None
    cache = ModelCache(settings.model_cache)
    for left in cache.remove_abandoned(older_than_s=2 * 60 * settings.task_timeout_min + 3600):
        log.info("removed %s, left by a staging that was stopped", left)
    try:
        staged = stage_into_cache(uri, cache=cache, local_root=settings.local_storage_root,
                                  before_download=lambda config: check_config(config, spec.train, field="model_uri"))  # fmt: skip
    except (StorageUnavailable, TransferCorrupted):
        raise
    except StorageError as exc:
        raise SpecError([("model_uri", f"cannot read the model: {exc}")], "invalid model") from None
    link = Path(spec.train.model.name_or_path)
    _check_inside(link.parent, settings.staging_root)
    tmp = link.with_name(f".{link.name}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(staged.path, tmp, target_is_directory=True)
    os.replace(tmp, link)  # atomic: a retry replaces the link of an earlier try
    return staged


def stage_dataset(spec: RunSpec, settings: Settings, *, write_manifest: bool = True) -> Manifest:
    """Download the dataset to ``spec.dataset_path``, validate the copy, and write the manifest
    (``write_manifest``: false leaves that to the caller).

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
        dataset = open_dataset(staged, name=uri)
        report = dataset.validate()
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
        if write_manifest:
            from dpo_lib.io import atomic_write_json

            atomic_write_json(spec.manifest_path, manifest.model_dump(mode="json"))
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    from dpo_lib.orchestration.runs import record_dataset

    # For the run's report (the staging folder is removed at the end): the manifest and the statistics
    # validation gathered (get_stats reuses that pass).
    record_dataset(spec.run_dir, manifest.model_dump(mode="json"), dataset.get_stats().to_dict())
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
