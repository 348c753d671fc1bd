"""The base model's checks before anything is downloaded or allocated, from its config.json alone.

``validate`` runs :func:`check_model` and ``stage`` runs :func:`check_config` before downloading the
weights. They refuse, naming the field, a Hub preset when the Hub cannot be reached, a max_length
beyond the model's ``max_position_embeddings``, and a run that cannot fit the worker's GPUs
(:mod:`dpo_lib.models.memory`). A worker without GPUs or torch skips the memory check and logs it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dpo_lib.models.folder import CONFIG_FILE, file_uri
from dpo_lib.models.hub import HubUnreachable, check_reachable, hub_config, hub_repo_id
from dpo_lib.settings import Settings
from dpo_lib.spec import FSDPTrainerConfig, LoRAConfig, RunSpec, SpecError, TrainConfig

log = logging.getLogger(__name__)


def check_model(spec: RunSpec, settings: Settings, *, gpus: list[int] | None = None) -> None:
    """validate's checks of the run's base model; :class:`SpecError` naming ``model`` or ``model_uri``.

    ``gpus``: each GPU's memory in bytes (default: this worker's, :func:`worker_gpus`).
    """
    request, model = spec.request, spec.train.model
    if request.model_uri is not None:
        config_json = config_from_storage(request.model_uri, settings)
    elif (repo_id := hub_repo_id(model.name_or_path, settings.workdir)) is not None:
        try:
            check_reachable(repo_id)
        except HubUnreachable as exc:
            raise SpecError([("model", f"the Hugging Face hub is not reachable from here ({exc}); stage the model "
                              f"yourself and pass model_uri=gs://bucket/path/ (or a folder under the storage root) "
                              f"instead of model={request.model}")], "model not available") from None  # fmt: skip
        config_json = _hub_config_or_none(repo_id)
    else:
        path = Path(model.name_or_path)
        config_file = (path if path.is_absolute() else settings.workdir / path) / CONFIG_FILE
        config_json = json.loads(config_file.read_text()) if config_file.is_file() else None
    if config_json is None:
        return
    check_config(config_json, spec.train, field="model_uri" if request.model_uri else "model", gpus=gpus)


def check_config(
    config_json: Mapping[str, Any], train: TrainConfig, *, field: str, gpus: list[int] | None = None
) -> None:
    """max_length against the model's positions, then training's memory against the GPUs."""
    if problem := positions_problem(config_json, train):
        raise SpecError([("overrides.max_length", problem)])
    check_memory(config_json, train, field=field, gpus=gpus)


def positions_problem(config_json: Mapping[str, Any], train: TrainConfig) -> str | None:
    positions = config_json.get("max_position_embeddings")
    if isinstance(positions, int) and train.max_length > positions:
        name = train.model.name
        return f"{train.max_length} is more than the model takes ({name}: max_position_embeddings {positions})"
    return None


def worker_gpus() -> list[int]:
    """Each visible GPU's total memory in bytes; [] where there is none. NVIDIA's device files are
    looked for first, so a CPU-only worker does not pay for importing torch."""
    if not any(Path("/dev").glob("nvidia[0-9]*")) or importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]


def check_memory(
    config_json: Mapping[str, Any], train: TrainConfig, *, field: str, gpus: list[int] | None = None
) -> None:
    """Refuse a run whose estimated peak memory is more than its GPUs have, saying what would fit."""
    if train.trainer.device == "cpu":
        return
    gpus = worker_gpus() if gpus is None else gpus
    if not gpus:
        log.info("memory check skipped: no GPU visible on this worker (or no torch here)")
        return
    from dpo_lib.models.memory import gib, model_shape

    try:
        shape = model_shape(config_json)
    except (ValueError, KeyError, TypeError, ImportError) as exc:
        log.warning("memory check skipped: cannot build the model from its config.json (%s)", exc)
        return
    used = _gpus_used(train, gpus)
    estimate = _estimate(shape, train, used)
    gpu_words = f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''} of {gib(min(gpus))}"
    if estimate.total <= min(used):
        log.info("memory: training needs %s; this worker has %s", estimate.describe(), gpu_words)
        return
    raise SpecError([(field, f"needs {estimate.describe()}; this worker has {gpu_words}: "
                             f"{_what_would_fit(shape, train, gpus)}")], "model does not fit")  # fmt: skip


def _gpus_used(train: TrainConfig, gpus: list[int]) -> list[int]:
    if train.trainer.name == "basic":
        return gpus[:1]
    return gpus[: train.trainer.nproc or len(gpus)]


def _estimate(shape: Any, train: TrainConfig, used: list[int]):
    from dpo_lib.models.memory import estimate_training_memory

    bf16 = train.trainer.precision != "fp32"  # auto is bf16 autocast on a GPU
    return estimate_training_memory(shape, train, shards=len(used), bf16=bf16)


def _what_would_fit(shape: Any, train: TrainConfig, gpus: list[int]) -> str:
    """The first of these changes, taken in turn, after which the run fits."""
    from dpo_lib.models.memory import gib

    changes: list[tuple[str, Callable[[TrainConfig], TrainConfig]]] = []
    if train.adapter.name == "none":
        changes.append(("adapter=lora", lambda c: c.model_copy(update={"adapter": LoRAConfig()})))
    if train.trainer.name == "basic" and len(gpus) > 1:
        fsdp = FSDPTrainerConfig.model_validate(train.trainer.model_dump(exclude={"name"}))
        changes.append(("trainer=fsdp", lambda c: c.model_copy(update={"trainer": fsdp})))
    if not train.trainer.activation_checkpointing:
        checkpointing = {"activation_checkpointing": True}
        changes.append(("trainer.activation_checkpointing=true",
                        lambda c: c.model_copy(update={"trainer": c.trainer.model_copy(update=checkpointing)})))  # fmt: skip
    if train.batch_size > 1:
        changes.append(("batch_size=1 (gradient_accumulation_steps makes up the rest)",
                        lambda c: c.model_copy(update={"batch_size": 1})))  # fmt: skip
    chosen, config = [], train
    for words, change in changes:
        config = change(config)
        chosen.append(words)
        used = _gpus_used(config, gpus)
        estimate = _estimate(shape, config, used)
        if estimate.total <= min(used):
            return f"use {' and '.join(chosen)} (≈ {gib(estimate.total)} per GPU)"
    return "even with " + ", ".join(chosen) + " it does not fit: use GPUs with more memory or a smaller model"


def config_from_storage(uri: str, settings: Settings) -> dict[str, Any] | None:
    """config.json of the model folder ``uri``; None when storage cannot be reached now (stage checks it)."""
    from dpo_lib.models.stage import read_json
    from dpo_lib.storage import ObjectNotFound, StorageError, StorageUnavailable, TransferCorrupted, get_storage

    try:
        with get_storage(uri, local_root=settings.local_storage_root) as storage:
            return read_json(storage, file_uri(uri, CONFIG_FILE))
    except (StorageUnavailable, TransferCorrupted) as exc:
        log.warning("model_uri: config.json cannot be read now (%s); stage checks the model", exc)
        return None
    except ObjectNotFound:
        raise SpecError([("model_uri", f"{uri} has no config.json: it is not a Hugging Face model folder")],
                        "invalid model") from None  # fmt: skip
    except StorageError as exc:
        raise SpecError([("model_uri", f"cannot read the model: {exc}")], "invalid model") from None


def _hub_config_or_none(repo_id: str) -> dict[str, Any] | None:
    try:
        return hub_config(repo_id)
    except Exception as exc:  # noqa: BLE001 - a gated model, the Hub down: only this early check is skipped
        log.info("%s: config.json not fetched from the Hub (%s); the model checks run when train loads it",
                 repo_id, exc)  # fmt: skip
        return None
