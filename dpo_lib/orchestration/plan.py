"""A fine-tune request resolved into its :class:`~dpo_lib.spec.RunSpec`: the run's folders and its
training config, composed once. The ``validate`` task writes it; the webhook resolves it too, so
nothing it accepts is refused later. Nothing is read from storage and nothing is written here.

A request with ``model_uri`` trains the model ``stage`` puts at ``<staging_dir>/model`` (a link to
its folder in the model cache); ``model.source_uri`` records where it comes from.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from dpo_lib.config import ConfigError, build_config
from dpo_lib.settings import Settings, path_safe
from dpo_lib.spec import NAME_PATTERN, STAGED_DATASET, FinetuneRequest, ModelConfig, RunSpec, SpecError, TrainConfig

STAGED_SUFFIXES = (".json", ".jsonl", ".ndjson")
STAGED_MODEL = "model"  # <staging_dir>/model: the model stage staged from model_uri
# The pipeline sets these per run, from the request's own fields; an override must not point a
# run at another run's folders or at arbitrary files on the worker.
SET_BY_PIPELINE = {"exp_name", "run_dir", "model.name_or_path", "model.tokenizer_name_or_path"}


def plan_run(conf: Any, *, dag_id: str, run_id: str, settings: Settings) -> RunSpec:
    """Check ``conf`` and compose its training config; :class:`SpecError` naming every problem."""
    try:
        request = FinetuneRequest.parse(conf, local_root=settings.local_storage_root, config_dir=settings.config_dir)
    except SpecError as exc:  # name the reserved overrides too: one refusal lists every field to fix
        overrides = conf.get("overrides") if isinstance(conf, Mapping) else None
        reserved = reserved_overrides(overrides) if isinstance(overrides, Mapping) else []
        if not reserved:
            raise
        raise SpecError([*exc.problems, *reserved]) from None
    run_key = path_safe(run_id)
    staging_dir = settings.staging_root / path_safe(dag_id) / run_key
    suffix = PurePosixPath(request.dataset_uri).suffix.lower()
    dataset_path = staging_dir / f"dataset{suffix if suffix in STAGED_SUFFIXES else '.data'}"
    run_dir = settings.artifacts_root / request.exp_name / run_key
    train = training_config(request, dataset_path=dataset_path, run_dir=run_dir, settings=settings)
    return RunSpec(
        dag_id=dag_id,
        run_id=run_id,
        request=request,
        staging_dir=str(staging_dir),
        dataset_path=str(dataset_path),
        train=train,
    )


def training_config(request: FinetuneRequest, *, dataset_path: Path, run_dir: Path, settings: Settings) -> TrainConfig:
    """The request's presets, its overrides as values, and the run's own folders; with ``model_uri``, the
    model stage puts beside the dataset in place of the preset's."""
    if reserved := reserved_overrides(request.overrides):
        raise ConfigError(reserved)
    groups = [f"model={request.model}", f"loss={request.loss}", f"trainer={request.trainer}",
              f"adapter={request.adapter}", f"datasets=[{STAGED_DATASET}]"]  # fmt: skip
    values = {
        **request.overrides,
        "exp_name": request.exp_name,
        "run_dir": str(run_dir),
        f"datasets.{STAGED_DATASET}.uri": str(dataset_path),
    }
    config = build_config(groups, values, config_dir=settings.config_dir, field_prefix="overrides")
    if request.model_uri is not None:
        model = staged_model_config(request.model_uri, dataset_path.parent / STAGED_MODEL)
        return config.model_copy(update={"model": model})
    check_model_fits(config, settings)  # a model_uri's config.json is read by validate (models.preflight)
    return config


def reserved_overrides(overrides: Mapping[Any, Any]) -> list[tuple[str, str]]:
    """The overrides of keys the pipeline sets itself, as ``(field, reason)`` problems."""
    reserved = sorted(
        key for key in overrides if isinstance(key, str) and (key in SET_BY_PIPELINE or key.split(".")[0] == "datasets")
    )
    return [(f"overrides.{key}", "is set by the pipeline for each run") for key in reserved]


def staged_model_config(model_uri: str, staged: Path) -> ModelConfig:
    """The model of a ``model_uri`` request: named after the folder, trained from its staged copy."""
    folder = PurePosixPath(model_uri.rstrip("/")).name or "model"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", folder).lstrip("._-")[:128]
    return ModelConfig(name=name if re.match(NAME_PATTERN, name) else "model", name_or_path=str(staged),
                       source_uri=model_uri)  # fmt: skip


def check_model_fits(config: TrainConfig, settings: Settings) -> None:
    """Refuse a max_length longer than the model's positions, when the model's config.json is at hand."""
    from dpo_lib.models.preflight import positions_problem

    model_dir = Path(config.model.name_or_path)
    config_file = (model_dir if model_dir.is_absolute() else settings.workdir / model_dir) / "config.json"
    try:
        config_json = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return  # not local yet (staged later) or not readable: train checks it when it loads the model
    if isinstance(config_json, dict) and (problem := positions_problem(config_json, config)):
        raise SpecError([("overrides.max_length", problem)])
