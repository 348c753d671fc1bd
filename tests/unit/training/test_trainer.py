"""BasicTrainer end to end on the tiny model and toy data (dpo_lib/training/trainer.py, recipe.py)."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import pytest
import torch

from dpo_lib.spec import TrainConfig
from dpo_lib.training.metrics import read_metrics
from dpo_lib.training.recipe import train
from dpo_lib.training.trainer import BasicTrainer
from tests.support.training import PAIR_METRICS, unreadable_by_others

TRAIN_METRICS = PAIR_METRICS | {"grad_norm", "lr", "tokens_per_s", "step"}


def test_dpo_loss_falls_well_below_log2_on_toy_data(trained_run: Path):
    train_metrics = read_metrics(trained_run)["train"]
    assert train_metrics["step"] == 30
    # at initialisation policy == reference, so the loss starts at exactly log 2 = 0.693
    assert train_metrics["loss"] < 0.5 < math.log(2)
    assert train_metrics["rewards/accuracies"] >= 0.9
    assert train_metrics["rewards/margins"] > 0.3
    assert train_metrics["rewards/chosen"] > train_metrics["rewards/rejected"]


def test_metrics_json_train_section_has_every_metric(trained_run: Path):
    train_metrics = read_metrics(trained_run)["train"]
    assert set(train_metrics) == TRAIN_METRICS
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in train_metrics.values())
    assert train_metrics["rewards/margins"] == pytest.approx(
        train_metrics["rewards/chosen"] - train_metrics["rewards/rejected"], abs=1e-5
    )
    assert train_metrics["lr"] == pytest.approx(5.0e-4)  # warmup_steps=0 in the test config
    assert train_metrics["tokens_per_s"] > 0 and train_metrics["grad_norm"] > 0
    assert train_metrics["logps/chosen"] < 0 and train_metrics["logps/rejected"] < 0


def test_in_training_evaluation_writes_held_out_metrics(trained_run: Path):
    eval_metrics = read_metrics(trained_run)["eval"]
    assert eval_metrics["step"] == 30
    assert {"loss", "rewards/accuracies", "rewards/margins", "logps/accuracies"} <= set(eval_metrics)
    assert eval_metrics["loss"] < math.log(2)


def test_final_policy_loads_with_from_pretrained_and_differs_from_the_start(trained_run: Path, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    final = trained_run / "final"
    trained = AutoModelForCausalLM.from_pretrained(final)
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert AutoTokenizer.from_pretrained(final).chat_template
    trained_params, initial_params = dict(trained.named_parameters()), dict(initial.named_parameters())
    assert trained_params.keys() == initial_params.keys()
    assert any(not torch.equal(trained_params[k], initial_params[k]) for k in trained_params)
    # the temporary directory final/ was assembled in is gone
    assert not any(p.name.startswith(".final.") for p in trained_run.iterdir())


def test_run_dir_holds_the_resolved_config(trained_run: Path):
    saved = json.loads((trained_run / "config.json").read_text())
    assert saved["max_steps"] == 30 and saved["run_dir"] == str(trained_run)
    assert TrainConfig.model_validate(saved).max_steps == 30  # the contract reads it back


def test_final_model_directory_is_readable_by_other_users(trained_run: Path):
    # evaluate/upload may run as another user than the trainer; mkdtemp would make it 0700,
    # and safetensors writes model.safetensors 0600
    mode = (trained_run / "final").stat().st_mode
    assert mode & (stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH) == (
        stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
    )
    assert unreadable_by_others(trained_run / "final") == []


def test_warmup_ramps_the_learning_rate_linearly(make_config, tmp_path):
    config = make_config("max_steps=3", "log_every=1", "warmup_steps=3", "lr=4e-4")
    trainer = BasicTrainer(config)
    trainer.setup()
    lrs = []
    for max_steps in (1, 2, 3):
        trainer.config = config.model_copy(update={"max_steps": max_steps})
        trainer.train()
        lrs.append(read_metrics(config.run_dir)["train"]["lr"])
    # factor min(1, (step + 1) / (warmup + 1)) for steps 0, 1, 2
    assert lrs == pytest.approx([1e-4, 2e-4, 3e-4])


def test_gradient_accumulation_sees_batch_size_times_steps_pairs(make_config):
    config = make_config("max_steps=2", "gradient_accumulation_steps=3", "batch_size=4")
    trainer = BasicTrainer(config)
    trainer.setup()
    seen = []
    get = trainer.batches.get
    trainer.batches.get = lambda index, *slice_of: seen.append(index) or get(index, *slice_of)
    trainer.train()
    assert seen == [0, 1, 2, 3, 4, 5]
    assert read_metrics(config.run_dir)["train"]["step"] == 2


def test_training_batches_are_a_pure_function_of_seed_and_index(make_config):
    trainer = BasicTrainer(make_config())
    trainer.setup()
    batches = trainer.batches
    first = [batches.get(i)["input_ids"] for i in (0, 5, batches.batches_per_epoch + 1)]
    batches.get(3 * batches.batches_per_epoch)  # jump to another epoch and back
    again = [batches.get(i)["input_ids"] for i in (0, 5, batches.batches_per_epoch + 1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # a new epoch is a new order
    assert not torch.equal(batches.get(0)["input_ids"], batches.get(batches.batches_per_epoch)["input_ids"])


def test_the_recipe_returns_the_last_logged_train_metrics_and_saves_the_policy(make_config):
    config = make_config("max_steps=3", "log_every=2")
    metrics = train(config)
    # logged at step 2 and at the final step 3; the return value is the last window
    assert set(metrics) == TRAIN_METRICS - {"step"}
    assert read_metrics(config.run_dir)["train"] == {**metrics, "step": 3}
    assert (Path(config.run_dir) / "final" / "model.safetensors").exists()


def test_truncation_is_reported_in_the_first_lines_of_training_and_recorded(make_config, caplog):
    import logging

    from dpo_lib.data.truncation import measure_truncation

    config = make_config("max_length=16", "max_prompt_length=4")
    trainer = BasicTrainer(config)
    with caplog.at_level(logging.WARNING, logger="dpo_lib.training.trainer"):
        trainer.setup()
    (line,) = [r.getMessage() for r in caplog.records if "truncation at" in r.getMessage()]
    assert "truncation at max_length 16 (max_prompt_length 4): " in line and "pairs" in line
    assert "lose tokens" in line and "raise max_length" in line
    # metrics.json says the same, with the counts the stage task measures on the dataset file
    recorded = read_metrics(config.run_dir)["data"]["truncation"]
    (dataset,) = config.datasets.values()
    measured = measure_truncation(dataset.uri, trainer.tokenizer, config).model_dump(mode="json")
    assert recorded["truncated_pairs"] > 0 and recorded["prompt_truncated_pairs"] > 0
    assert recorded == {**measured, "lengths": {}}


def test_a_run_that_truncates_nothing_records_that_too(make_config):
    config = make_config()
    BasicTrainer(config).setup()
    truncation = read_metrics(config.run_dir)["data"]["truncation"]
    assert truncation["truncated_pairs"] == 0 and truncation["pair_count"] > 0


def test_tokenized_pairs_are_cached_in_the_run_folder(make_config, caplog):
    import logging

    config = make_config()
    first = BasicTrainer(config)
    first.setup()
    (cache,) = (Path(config.run_dir) / "cache").glob("tokens-*.pt")
    with caplog.at_level(logging.INFO, logger="dpo_lib.training.data"):
        again = BasicTrainer(config)
        again.setup()
    assert any(f"tokenized pairs from {cache}" in r.getMessage() for r in caplog.records)
    assert again.batches.pairs == first.batches.pairs and again.eval_pairs == first.eval_pairs
