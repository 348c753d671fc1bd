"""The bodies of the fine-tune tasks that run on the Airflow worker itself: validate, stage, cleanup.

``validate`` resolves the request into the run's spec and writes it; every later task reads that
file (train and evaluate as ``python -m dpo_lib train --spec PATH``, run by the configured runner).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpo_lib.orchestration.plan import plan_run
from dpo_lib.orchestration.staging import cleanup_staging, stage_inputs
from dpo_lib.settings import Settings
from dpo_lib.spec import RunSpec

log = logging.getLogger(__name__)


def validate(conf: dict[str, Any], *, dag_id: str, run_id: str) -> Path:
    """Check the request and compose its training config, check the base model where its config.json is
    cheap to read (:func:`~dpo_lib.models.preflight.check_model`: the Hub, max_length, GPU memory);
    write the run spec and return its path.

    Raises :class:`~dpo_lib.spec.SpecError` (nothing is written anywhere) when any is bad.
    """
    from dpo_lib.models.preflight import check_model

    settings = Settings.from_env()
    spec = plan_run(conf, dag_id=dag_id, run_id=run_id, settings=settings)
    check_model(spec, settings)
    path = spec.write()
    log.info("run spec %s: %s on %s, %s loss, %s trainer; run_dir %s", path,
             spec.request.model_uri or spec.request.model, spec.request.dataset_uri, spec.train.loss.name,
             spec.train.trainer.name, spec.run_dir)  # fmt: skip
    return path


def stage(spec_path: str | Path) -> dict[str, Any]:
    """Stage the run's dataset (validating the copy) and its model_uri, if any; returns the manifest."""
    return stage_inputs(RunSpec.read(spec_path), Settings.from_env()).model_dump(mode="json")


def cleanup(spec_path: str | Path, *, task_states: Mapping[str, str | None] | None = None,
            report_base: str = "") -> None:  # fmt: skip
    """The run's teardown: its staging folder, and with the docker runner any container it left.

    Given the run's ``task_states`` (task id to state), a run that ``promote`` did not finish gets its
    ``report.html`` here (:func:`~dpo_lib.results.report_copy.write_unfinished_report`), links to Airflow
    at ``report_base``; a report that cannot be written is a warning, never a failed cleanup.
    """
    settings = Settings.from_env()
    if not Path(spec_path).exists():  # a retry after the folder (the spec with it) was removed
        log.info("nothing staged at %s", Path(spec_path).parent)
        return
    spec = RunSpec.read(spec_path)
    try:
        if task_states is not None:
            _write_unfinished_report(spec, settings, report_base, task_states)
        if settings.runner == "docker":
            from dpo_lib.orchestration.containers import remove_stray_containers

            remove_stray_containers(spec.dag_id, spec.run_id, docker_url=settings.docker.url)
    finally:
        cleanup_staging(spec, settings)


def _write_unfinished_report(spec: RunSpec, settings: Settings, base: str,
                             task_states: Mapping[str, str | None]) -> None:  # fmt: skip
    from dpo_lib.results.report_copy import write_unfinished_report

    try:
        path = write_unfinished_report(spec, settings, base, task_states)
    except Exception as exc:  # the report is a convenience; the staging folder must go all the same
        log.warning("no report.html for this run (%s)", exc)
        return
    if path is not None:
        log.info("report of the unfinished run: %s", path)
