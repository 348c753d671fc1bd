"""``python -m dpo_lib compare --spec PATH``: the challenger (this run's final/) and the champion on the same
held-out pairs, with the same reference, in one process; runs where train and evaluate run (it needs torch).

Reads the champion ``publish`` staged (``champion.json`` and ``champion/`` in the run's staging folder,
read-only in a container) and writes ``run_dir/comparison.json`` for ``promote``: both models' held-out metrics, the champion's
version, and why the champion was not evaluated when it was not (none, this run's own version, a stored
copy that is not complete, another base model under its adapters, another tokenizer). Also writes
``run_dir/samples.json`` (:mod:`~dpo_lib.results.samples`). Prints the comparison as its last line.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_json
from dpo_lib.spec import RunSpec, TrainConfig

log = logging.getLogger(__name__)

COMPARISON_FILE = "comparison.json"  # in the run folder
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt")


def compare(config: TrainConfig, policy_path: Path, champion: dict[str, Any]) -> dict[str, Any]:
    """Both models' held-out metrics (``champion``: what publish's champion.json says); writes samples.json."""
    from dpo_lib.results.samples import SAMPLES_FILE, side_by_side
    from dpo_lib.training.trainer import BasicTrainer, TrainingError

    trainer = BasicTrainer(config)
    trainer.setup_for_evaluation(policy_path=policy_path)
    if not trainer.eval_pairs:
        raise TrainingError("the held-out split is empty: there is nothing to compare the models on")
    challenger = trainer.evaluate(trainer.policy)
    why_not = not_comparable(config, policy_path, champion)
    champion_model = None
    if why_not is None:
        champion_model = load_champion(trainer, config, Path(champion["path"]))
    champion_metrics = trainer.evaluate(champion_model) if champion_model is not None else None
    reference = trainer.reference or trainer.build_reference()
    samples = side_by_side(trainer.tokenizer, trainer.eval_pairs,
                           {"reference": reference, "champion": champion_model, "policy": trainer.policy},
                           trainer.device)  # fmt: skip
    atomic_write_json(Path(config.run_dir) / SAMPLES_FILE, samples)
    if why_not:
        log.info("the champion is not evaluated: %s", why_not)
    return {
        "challenger": challenger,
        "champion": champion_metrics,
        "champion_version": champion.get("version"),
        "not_compared": why_not,
        "n_pairs": len(trainer.eval_pairs),
    }


def not_comparable(config: TrainConfig, policy_path: Path, champion: dict[str, Any]) -> str | None:
    """Why the champion cannot be evaluated against this run's model, or None when it can."""
    from dpo_lib.tracking.lineage import Lineage
    from dpo_lib.training.adapters import is_adapter_folder

    if champion.get("version") is None:
        return "there is no champion"
    if champion.get("self"):
        return f"version {champion['version']}, this run's own model, is already the champion"
    if champion.get("error"):
        return f"its stored copy cannot be read: {champion['error']}"
    path = Path(champion["path"])
    base = Lineage.of(config).base_model_id
    if is_adapter_folder(path) and champion.get("base_model_id") != base:
        return f"its adapters sit on another base model ({champion.get('base_model_id')}, not {base})"
    for name in TOKENIZER_FILES:
        mine, theirs = policy_path / name, path / name
        if mine.exists() and theirs.exists() and mine.read_bytes() != theirs.read_bytes():
            return f"it uses another tokenizer ({name} differs): the same pairs would be other tokens"
    return None


def load_champion(trainer: Any, config: TrainConfig, path: Path) -> Any:
    """The champion as a frozen model: a full model, or its adapters over this run's base model."""
    from dpo_lib.training.adapters import is_adapter_folder

    if is_adapter_folder(path):
        return trainer.build_model(config.model.name_or_path, trainable=False, adapter_dir=path)
    return trainer.build_model(str(path), trainable=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, required=True, help="a DAG run's run_spec.json (publish has run)")


def run(args: argparse.Namespace) -> int:
    from dpo_lib.results.publish import CHAMPION_FILE

    spec = RunSpec.read(args.spec)
    config = spec.staged_train_config()
    champion_file = Path(spec.staging_dir) / CHAMPION_FILE
    if not champion_file.exists():
        print(f"error: no {champion_file}: publish must run before compare", file=sys.stderr)
        return 2
    from dpo_lib.training.recipe import configure_logging

    configure_logging()
    from dpo_lib.training.trainer import TrainingError

    try:
        comparison = compare(config, spec.run_dir / "final", json.loads(champion_file.read_text()))
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic_write_json(spec.run_dir / COMPARISON_FILE, comparison)
    print(json.dumps(comparison, sort_keys=True))
    return 0
