"""Every configured loss trains through BasicTrainer; only reference-based ones load a reference."""

from __future__ import annotations

import math

import pytest

from dpo_lib.training.metrics import read_metrics
from dpo_lib.training.trainer import BasicTrainer


@pytest.mark.parametrize(
    ("loss", "loads_reference"),
    [("dpo", True), ("ipo", True), ("hinge", True), ("reference_free", False), ("sft", False)],
)
def test_each_loss_trains_a_few_steps(make_config, loss, loads_reference):
    config = make_config(f"loss={loss}", "max_steps=2", "log_every=1")
    trainer = BasicTrainer(config)
    trainer.setup()
    assert (trainer.reference is not None) is loads_reference
    metrics = trainer.train()
    assert trainer.step == 2
    assert math.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0
    assert read_metrics(config.run_dir)["train"]["step"] == 2
    assert (trainer.save_final() / "model.safetensors").exists()


@pytest.mark.parametrize(
    ("loss", "expected_first_loss"),
    [("dpo", math.log(2)), ("ipo", (0 - 1 / (2 * 0.1)) ** 2), ("hinge", 1.0)],
)
def test_reference_losses_start_where_policy_equals_reference(make_config, loss, expected_first_loss):
    # before the first update the policy is the reference, so the margin h is 0 for every pair
    trainer = BasicTrainer(make_config(f"loss={loss}", "max_steps=1", "log_every=1"))
    trainer.setup()
    assert trainer.train()["loss"] == pytest.approx(expected_first_loss, abs=1e-4)
