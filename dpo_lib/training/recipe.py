"""``python -m dpo_lib train``: the training recipe, read top to bottom: set up, train, save.

The run is one :class:`~dpo_lib.spec.TrainConfig`: from a DAG run's spec (``--spec run_spec.json``,
written by ``validate``) or from ``configs/`` presets and ``key=value`` overrides (``python train.py
model=tiny datasets=[toy] loss=dpo exp_name=x``). Multi-process trainers (fsdp, tensor_parallel)
re-run the same command under torchrun, one process per device.

Exit status: 0 trained, 2 the config is invalid, 3 the disk filled up (one line names the run folder
and the checkpoint kept; the same command resumes once there is space), 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dpo_lib.spec import SpecError, TrainConfig

if TYPE_CHECKING:
    from dpo_lib.tracking import RunTracker

EXIT_CONFIG, EXIT_DISK_FULL = 2, 3


def train(
    config: TrainConfig, dataset_uris: Mapping[str, str] | None = None, tracker: RunTracker | None = None
) -> dict[str, float]:
    """The recipe: the trainer the config names, set up, trained, its policy saved to run_dir/final/
    (``dataset_uris``: the datasets' original URIs, for the model card, when the config names staged copies;
    ``tracker``: history.jsonl and MLflow, started on rank 0 once setup knows the step it resumes from)."""
    trainer = build_trainer(config)
    logging.getLogger(__name__).info(
        "experiment %s: %s trainer, %s loss, run_dir %s",
        config.exp_name, config.trainer.name, config.loss.name, config.run_dir,
    )  # fmt: skip
    try:
        trainer.setup()
        if tracker is not None and trainer.is_main:
            trainer.tracker = tracker.start(resume_step=trainer.step)
        metrics = trainer.train()
        trainer.save_final(dataset_uris)
        return metrics
    finally:
        failed = sys.exc_info()[0] is not None
        import torch.distributed as dist

        if dist.is_initialized():  # every rank together, before rank 0's tracker takes its time
            dist.destroy_process_group()
        trainer.tracker.close(failed=failed)  # the end-of-run sync to MLflow, bounded


def build_trainer(config: TrainConfig):
    """``BasicTrainer``, ``FSDPTrainer`` or ``TensorParallelTrainer``, by ``trainer.name``."""
    from dpo_lib.training.trainer import BasicTrainer

    if config.trainer.name == "basic":
        return BasicTrainer(config)
    from dpo_lib.training.distributed import FSDPTrainer, TensorParallelTrainer

    return {"fsdp": FSDPTrainer, "tensor_parallel": TensorParallelTrainer}[config.trainer.name](config)


# ---- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="presets and values, e.g. model=tiny datasets=[toy] loss=dpo exp_name=my_exp lr=1e-4",
    )
    parser.add_argument("--spec", type=Path, help="a DAG run's run_spec.json (instead of key=value)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def load_config(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, str] | None]:
    """The run's config: the spec's (with the staged dataset's digest), or composed from the overrides;
    and, from a spec, the staged dataset's original URI by its name in the config."""
    if args.spec is not None:
        if args.overrides:
            raise SpecError([("--spec", "give a run spec or key=value overrides, not both")], "invalid arguments")
        from dpo_lib.spec import STAGED_DATASET, RunSpec

        spec = RunSpec.read(args.spec)
        return spec.staged_train_config(), {STAGED_DATASET: spec.request.dataset_uri}
    from dpo_lib.config import compose_config

    return compose_config(args.overrides), None


def run(args: argparse.Namespace) -> int:
    try:
        config, dataset_uris = load_config(args)
    except SpecError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.print_config:
        print(json.dumps(config.model_dump(mode="json"), indent=2))
        return 0
    if config.needs_torchrun and "LOCAL_RANK" not in os.environ:
        from dpo_lib.training.torchrun import relaunch

        return relaunch(config.trainer, args.argv)
    configure_logging()
    from dpo_lib.training.trainer import TrainingError

    try:
        metrics = train(config, dataset_uris, tracker=run_tracker(config, args.spec))
    except TrainingError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:
        from dpo_lib.io import is_disk_full

        if not is_disk_full(exc):
            raise
        print(disk_full_message(config.run_dir, exc), file=sys.stderr)
        return EXIT_DISK_FULL
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"run_dir": config.run_dir, "train": metrics}))
    return 0


def run_tracker(config: TrainConfig, spec_path: Path | None) -> RunTracker | None:
    """The run's tracker, with the lineage its spec adds; None (and a warning) when it cannot be made."""
    from dpo_lib.spec import RunSpec
    from dpo_lib.tracking import tracker_for

    try:
        return tracker_for(config, RunSpec.read(spec_path) if spec_path is not None else None)
    except Exception as exc:  # tracking must never stop a run
        logging.getLogger(__name__).warning("not tracking this run (%s); it trains all the same", exc)
        return None


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for noisy in ("httpx", "urllib3", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def disk_full_message(run_dir: str, exc: BaseException) -> str:
    """One line for a run stopped by a full disk: where, what was being written, what was kept."""
    from dpo_lib.training.checkpoint import latest_checkpoint

    kept = latest_checkpoint(run_dir)
    reason = " ".join(str(exc).split())[:300]
    return (
        f"error: no space left on device under {run_dir} ({reason}); "
        f"{f'the newest complete checkpoint {kept} is kept' if kept else 'no complete checkpoint yet'}; "
        "free some space and run the same command again to resume"
    )
