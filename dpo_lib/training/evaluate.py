"""``python -m dpo_lib evaluate``: held-out metrics of a trained policy and of its reference.

Reads the run from ``--spec run_spec.json`` or ``--run-dir``, writes the ``eval`` part of
``run_dir/metrics.json`` (the reference's metrics under ``reference``) and the model card again
with them, and prints the whole metrics.json as its last line. The policy is final/: a full model,
or an adapter folder whose reference is the same model with its adapters off.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from dpo_lib.spec import TrainConfig

log = logging.getLogger(__name__)


def evaluate(config: TrainConfig, policy_path: Path, dataset_uris: Mapping[str, str] | None = None) -> dict:
    """The policy at ``policy_path`` and the reference on the held-out split; updates metrics.json and the
    model card beside the policy (``dataset_uris``: the datasets' original URIs, for the card)."""
    from dpo_lib.training import model_card
    from dpo_lib.training.metrics import read_metrics, update_metrics
    from dpo_lib.training.trainer import BasicTrainer, TrainingError

    trainer = BasicTrainer(config)
    trainer.setup_for_evaluation(policy_path=policy_path)
    if not trainer.eval_pairs:
        raise TrainingError(
            "the held-out split is empty: give the dataset more pairs or datasets.<name>.eval_fraction > 0"
        )
    policy_metrics = trainer.evaluate(trainer.policy)
    reference = trainer.reference or trainer.build_reference()
    reference_metrics = trainer.evaluate(reference)
    reference_metrics.pop("rewards/accuracies", None)  # 0 by construction: its rewards are β·(ref − ref)
    step = read_metrics(config.run_dir).get("train", {}).get("step")
    n_pairs = len(trainer.eval_pairs)
    eval_metrics = {**policy_metrics, "reference": reference_metrics, "n_pairs": n_pairs, "step": step}
    log.info(
        "held-out (%d pairs): rewards/accuracies %.3f, loss %.4f; logps/accuracies policy %.3f vs reference %.3f",
        n_pairs, policy_metrics["rewards/accuracies"], policy_metrics["loss"],
        policy_metrics["logps/accuracies"], reference_metrics["logps/accuracies"],
    )  # fmt: skip
    metrics = update_metrics(config.run_dir, eval=eval_metrics)
    model_card.write(policy_path, config, step=step, evaluation=eval_metrics, dataset_uris=dataset_uris)
    return metrics


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--spec", type=Path, help="a DAG run's run_spec.json")
    source.add_argument("--run-dir", type=Path, help="a run directory written by `train`")


def run(args: argparse.Namespace) -> int:
    from dpo_lib.spec import STAGED_DATASET, RunSpec

    dataset_uris = None
    if args.spec is not None:
        spec = RunSpec.read(args.spec)
        config = spec.staged_train_config()
        dataset_uris = {STAGED_DATASET: spec.request.dataset_uri}
        run_dir = Path(config.run_dir)
    else:
        run_dir = args.run_dir
        if not (run_dir / "config.json").exists():
            print(f"error: {run_dir} holds no finished training run (no config.json)", file=sys.stderr)
            return 2
        # The run may have moved since training (another machine, another mount point): its
        # directory is the one given here, not the one recorded in its config.
        saved = json.loads((run_dir / "config.json").read_text())
        config = TrainConfig.model_validate({**saved, "run_dir": str(run_dir)})
    from dpo_lib.training.adapters import is_adapter_folder

    final = run_dir / "final"
    if not (final / "config.json").exists() and not is_adapter_folder(final):
        print(f"error: {run_dir} holds no finished training run (no final/)", file=sys.stderr)
        return 2

    from dpo_lib.training.recipe import configure_logging

    configure_logging()
    from dpo_lib.training.trainer import TrainingError

    try:
        metrics = evaluate(config, final, dataset_uris)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.spec is None:  # MLflow gets the held-out metrics here; in a DAG run, publish sends them next
        from dpo_lib.tracking.sync import sync_quietly

        sync_quietly(run_dir)
    print(json.dumps(metrics, sort_keys=True))
    return 0
