"""``python -m dpo_lib evaluate --run-dir DIR``: held-out metrics for the trained policy and the reference.

Writes the ``eval`` part of ``run_dir/metrics.json``: the policy's metrics under their
own names, and the reference model's under ``reference`` (its rewards are zero by
definition; ``logps/accuracies``, how often it already prefers the chosen completion,
is the baseline the policy's is compared to). Prints the whole metrics.json as the
last line, so an Airflow task can pass it on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="a run directory written by `train`")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    config_path, final = run_dir / "config.json", run_dir / "final"
    if not config_path.exists() or not (final / "config.json").exists():
        print(f"error: {run_dir} holds no finished training run (config.json and final/)", file=sys.stderr)
        return 2

    from dpo_lib.training.train_cli import configure_logging

    configure_logging()
    import logging

    from dpo_lib.training.metrics import read_metrics, update_metrics
    from dpo_lib.training.trainer import BasicTrainer

    cfg = json.loads(config_path.read_text())
    # The run may have moved since training (another machine, another mount point): its
    # directory is the one given here, not the one recorded in its config.
    cfg["run_dir"] = str(run_dir)
    trainer = BasicTrainer(cfg)
    trainer.setup_for_evaluation(policy_path=final)
    if not trainer.eval_pairs:
        print("error: the held-out split is empty (set datasets.<name>.eval_fraction > 0)", file=sys.stderr)
        return 1
    policy_metrics = trainer.evaluate(trainer.policy)
    reference = trainer.reference or trainer.build_model(cfg["model"]["name_or_path"], trainable=False)
    reference_metrics = trainer.evaluate(reference)
    step = read_metrics(run_dir).get("train", {}).get("step")
    eval_metrics = {**policy_metrics, "reference": reference_metrics, "n_pairs": len(trainer.eval_pairs), "step": step}
    metrics = update_metrics(run_dir, eval=eval_metrics)
    logging.getLogger(__name__).info(
        "held-out (%d pairs): rewards/accuracies %.3f, loss %.4f; logps/accuracies policy %.3f vs reference %.3f",
        len(trainer.eval_pairs), policy_metrics["rewards/accuracies"], policy_metrics["loss"],
        policy_metrics["logps/accuracies"], reference_metrics["logps/accuracies"],
    )  # fmt: skip
    print(json.dumps(metrics, sort_keys=True))
    return 0
