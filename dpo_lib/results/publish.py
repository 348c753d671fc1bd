"""The ``publish`` task (on the Airflow worker, no torch): the run's results made durable and findable.

It syncs the whole run to MLflow (:func:`~dpo_lib.tracking.sync.sync_run`), stores final/ and the
report files under ``output_uri`` (:mod:`~dpo_lib.results.upload`), registers the stored copy as a
new version of ``registered_model_name``, and fetches the current champion into the run's staging
folder for ``compare``. Writes ``run_dir/publish.json`` and returns it. Each step is idempotent,
so a retry redoes only what is missing.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_json
from dpo_lib.results import locations, registry
from dpo_lib.results.upload import MARKER, IncompleteUpload, download_complete, upload_files
from dpo_lib.settings import Settings
from dpo_lib.spec import RunSpec

log = logging.getLogger(__name__)

PUBLISH_FILE = "publish.json"
CHAMPION_DIR, CHAMPION_FILE = "champion", "champion.json"  # in the run's staging folder
REPORT_FILES = ("metrics.json", "config.json", "history.jsonl", "tracking.json", "run.json", "dataset.json")


class NotEvaluated(RuntimeError):
    """The run folder lacks what publish stores (final/ or metrics.json's held-out part): evaluate has not run."""


def publish(spec_path: str | Path, settings: Settings | None = None) -> dict[str, Any]:
    """Sync, store, register, and fetch the champion; returns what ``publish.json`` says."""
    from dpo_lib.storage import get_storage
    from dpo_lib.tracking.lineage import Lineage
    from dpo_lib.tracking.mlflow_run import make_client
    from dpo_lib.tracking.sync import sync_run
    from dpo_lib.tracking.target import resolve_target

    settings = settings or Settings.from_env()
    spec = RunSpec.read(spec_path)
    run_dir, config = spec.run_dir, spec.staged_train_config()
    files = run_files(run_dir)
    out = locations.output_uri(spec, settings.local_storage_root)
    name = locations.registered_model_name(spec.request)
    lineage = Lineage.of(config, spec)
    target = resolve_target()

    run = sync_run(run_dir, lineage=lineage, target=target, extra_tags={registry.OUTPUT_TAG: out})
    with get_storage(out, local_root=settings.local_storage_root) as storage:
        marker = upload_files(storage, files, out, info={"dag_id": spec.dag_id, "run_id": spec.run_id,
                                                         "exp_name": spec.request.exp_name})  # fmt: skip
    log.info("stored %d files (%d bytes) at %s, %s last", len(marker["files"]), marker["bytes"], out, MARKER)

    client = make_client(target, patient=True)
    version_tags = {key: value for key, value in lineage.tags().items() if key.startswith("dpo.")}
    version = registry.register_version(client, name, output_uri=out, run_id=run.run_id,
                                        tags={**version_tags, "dpo.base_model_id": lineage.base_model_id})  # fmt: skip
    log.info("registered %s version %s (source %s)", name, version.version, version.source)
    champion = stage_champion(client, name, str(version.version), Path(spec.staging_dir), settings)

    summary = {
        "output_uri": out,
        "marker_uri": out + MARKER,
        "files": len(marker["files"]),
        "bytes": marker["bytes"],
        "registered_model_name": name,
        "version": str(version.version),
        "source": version.source,
        "tracking_uri": target.uri,
        "mlflow_run_id": run.run_id,
        "champion_version": champion.get("version"),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(run_dir / PUBLISH_FILE, summary)
    return summary


def run_files(run_dir: Path) -> dict[str, Path]:
    """What publish stores: final/**, and the report files present (relative path -> local file)."""
    final = run_dir / "final"
    metrics = run_dir / "metrics.json"
    if not final.is_dir() or not metrics.exists():
        raise NotEvaluated(f"{run_dir} has no final/ or metrics.json: train and evaluate must run first")
    files = {path.relative_to(run_dir).as_posix(): path for path in sorted(final.rglob("*")) if path.is_file()}
    files.update({name: run_dir / name for name in REPORT_FILES if (run_dir / name).is_file()})
    return files


def stage_champion(client: Any, name: str, own_version: str, staging_dir: Path, settings: Settings) -> dict[str, Any]:
    """Download the champion's final/ into ``staging_dir/champion/`` and describe it in ``champion.json``.

    No champion, or this run's own version already champion (a retry after promote), stages nothing. A
    champion whose stored copy is not complete is described with its ``error`` (compare then cannot
    judge it); other storage errors raise, for Airflow to retry.
    """
    from dpo_lib.storage import get_storage

    folder = staging_dir / CHAMPION_DIR
    shutil.rmtree(folder, ignore_errors=True)
    current = registry.champion(client, name)
    info: dict[str, Any] = {"version": None}
    if current is not None and str(current.version) != own_version:
        uri = current.tags.get(registry.OUTPUT_TAG) or ""
        info = {"version": str(current.version), "output_uri": uri, "path": str(folder / "final"),
                "base_model_id": current.tags.get("dpo.base_model_id"), "adapter": current.tags.get("dpo.adapter"),
                "run_id": current.tags.get("dpo.run_id")}  # fmt: skip
        try:
            if not uri:
                raise IncompleteUpload(f"{name} version {current.version}", f"no {registry.OUTPUT_TAG} tag")
            with get_storage(uri, local_root=settings.local_storage_root) as storage:
                download_complete(storage, uri, folder / "final", under="final/")
            log.info("the champion, %s version %s, staged from %s", name, current.version, uri)
        except IncompleteUpload as exc:
            log.warning("the champion %s version %s cannot be compared: %s", name, current.version, exc)
            info["error"] = str(exc)
    elif current is not None:
        info = {"version": str(current.version), "self": True}
    staging_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(staging_dir / CHAMPION_FILE, info)
    return info
