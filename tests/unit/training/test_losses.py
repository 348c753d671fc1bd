"""The preference losses against numbers worked out by hand from the formulas in dpo_lib/losses.py.

Two pairs throughout, with summed log-probabilities chosen so the margins are round:

    pair 0: π_c=-10, π_r=-14, ref_c=-11, ref_r=-12  ->  h = (-10+14) - (-11+12) = 3
    pair 1: π_c=-20, π_r=-15, ref_c=-18, ref_r=-16  ->  h = (-20+15) - (-18+16) = -3
"""

from __future__ import annotations

import math

import pytest
import torch

from dpo_lib.losses import LOSSES, DPOLoss, HingeLoss, IPOLoss, ReferenceFreeLoss, SFTLoss, build_loss
from dpo_lib.spec import LOSS_CONFIGS
from dpo_lib.training.logps import PairLogps

BETA = 0.1
PI_C, PI_R, REF_C, REF_R = [-10.0, -20.0], [-14.0, -15.0], [-11.0, -18.0], [-12.0, -16.0]
MARGINS = [3.0, -3.0]  # h per pair, see the module docstring


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


@pytest.fixture
def logps() -> tuple[torch.Tensor, ...]:
    """Policy log-probs require grad, as they do in training; the reference's do not."""
    return (
        torch.tensor(PI_C, requires_grad=True),
        torch.tensor(PI_R, requires_grad=True),
        torch.tensor(REF_C),
        torch.tensor(REF_R),
    )


def pair(chosen: torch.Tensor, rejected: torch.Tensor, chosen_tokens: torch.Tensor | None = None) -> PairLogps:
    tokens = chosen_tokens if chosen_tokens is not None else torch.ones_like(chosen, dtype=torch.long)
    return PairLogps(chosen, rejected, tokens, tokens)


def policy_and_reference(logps: tuple[torch.Tensor, ...]) -> tuple[PairLogps, PairLogps]:
    pi_c, pi_r, ref_c, ref_r = logps
    return pair(pi_c, pi_r), pair(ref_c, ref_r)


def assert_values(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.shape == (len(expected),)
    assert actual.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_dpo_loss_is_minus_log_sigmoid_of_beta_times_margin(logps):
    # pair 0: -log σ(0.3) = log(1 + e^-0.3) = 0.554355...; pair 1: log(1 + e^0.3) = 0.854355...
    expected = [math.log(1 + math.exp(-0.3)), math.log(1 + math.exp(0.3))]
    assert expected[0] == pytest.approx(0.5543552, abs=1e-6)
    assert_values(DPOLoss(beta=BETA)(*policy_and_reference(logps)).losses, expected)


def test_dpo_loss_with_label_smoothing_is_conservative_dpo(logps):
    eps = 0.2
    expected = [-(1 - eps) * log_sigmoid(BETA * h) - eps * log_sigmoid(-BETA * h) for h in MARGINS]
    # pair 0 by hand: 0.8 * 0.5543552 + 0.2 * 0.8543552 = 0.6143552
    assert expected[0] == pytest.approx(0.6143552, abs=1e-6)
    assert_values(DPOLoss(beta=BETA, label_smoothing=eps)(*policy_and_reference(logps)).losses, expected)


def test_ipo_loss_is_squared_distance_of_margin_from_half_inverse_beta(logps):
    # 1/(2β) = 5: (3 - 5)^2 = 4 and (-3 - 5)^2 = 64
    assert_values(IPOLoss(beta=BETA)(*policy_and_reference(logps)).losses, [4.0, 64.0])


def test_hinge_loss_below_the_hinge_is_one_minus_beta_margin(logps):
    # 1 - 0.1*3 = 0.7 and 1 - 0.1*(-3) = 1.3
    out = HingeLoss(beta=BETA)(*policy_and_reference(logps))
    assert_values(out.losses, [0.7, 1.3])
    out.losses.sum().backward()
    # d/dπ_c of (1 - β·h) is -β on the active side of the hinge
    assert logps[0].grad.tolist() == pytest.approx([-BETA, -BETA])


def test_hinge_loss_is_zero_with_zero_gradient_past_the_hinge():
    # h = 20 and h = 10 (exactly at the hinge: 1 - 0.1*10 = 0)
    pi_c = torch.tensor([0.0, 0.0], requires_grad=True)
    out = HingeLoss(beta=BETA)(pair(pi_c, torch.tensor([-20.0, -10.0])), pair(torch.zeros(2), torch.zeros(2)))
    assert_values(out.losses, [0.0, 0.0])
    out.losses.sum().backward()
    assert pi_c.grad.tolist() == [0.0, 0.0]


def test_reference_free_loss_uses_policy_margin_only(logps):
    pi_c, pi_r, _, _ = logps
    # h = π_c - π_r = 4 and -5: log(1 + e^-0.4), log(1 + e^0.5)
    expected = [math.log(1 + math.exp(-0.4)), math.log(1 + math.exp(0.5))]
    out = ReferenceFreeLoss(beta=BETA)(pair(pi_c, pi_r), None)
    assert_values(out.losses, expected)
    # rewards against a zero reference: β·π
    assert_values(out.chosen_rewards, [-1.0, -2.0])
    assert_values(out.rejected_rewards, [-1.4, -1.5])


def test_reference_free_loss_with_label_smoothing():
    eps = 0.2
    out = ReferenceFreeLoss(beta=BETA, label_smoothing=eps)(pair(torch.tensor([-10.0]), torch.tensor([-14.0])), None)
    assert_values(out.losses, [-(1 - eps) * log_sigmoid(0.4) - eps * log_sigmoid(-0.4)])


def test_sft_loss_is_per_token_negative_log_likelihood_of_chosen():
    pi_c = torch.tensor([-12.0, -5.0], requires_grad=True)
    out = SFTLoss()(pair(pi_c, torch.zeros(2), torch.tensor([4, 0])), None)  # 0 counted tokens must not divide by zero
    assert_values(out.losses, [3.0, 5.0])
    assert_values(out.chosen_rewards, [-3.0, -5.0])
    assert_values(out.rejected_rewards, [0.0, 0.0])
    assert not out.chosen_rewards.requires_grad
    out.losses.sum().backward()
    assert pi_c.grad.tolist() == pytest.approx([-0.25, -1.0])


@pytest.mark.parametrize("loss_class", [DPOLoss, IPOLoss, HingeLoss], ids=["dpo", "ipo", "hinge"])
def test_rewards_are_beta_times_policy_minus_reference_and_detached(logps, loss_class):
    out = loss_class(beta=BETA)(*policy_and_reference(logps))
    # β(π_c - ref_c): 0.1*(-10+11) = 0.1, 0.1*(-20+18) = -0.2; β(π_r - ref_r): -0.2, 0.1
    assert_values(out.chosen_rewards, [0.1, -0.2])
    assert_values(out.rejected_rewards, [-0.2, 0.1])
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad
    assert out.losses.requires_grad


def test_dpo_gradient_pushes_chosen_up_and_rejected_down(logps):
    pi_c, pi_r, _, _ = logps
    DPOLoss(beta=BETA)(*policy_and_reference(logps)).losses.sum().backward()
    # dL/dπ_c = -β·σ(-β·h): pair 0: -0.1·σ(-0.3)
    sigma = 1 / (1 + math.exp(0.3))
    assert pi_c.grad[0].item() == pytest.approx(-BETA * sigma, rel=1e-5)
    assert pi_r.grad[0].item() == pytest.approx(BETA * sigma, rel=1e-5)


@pytest.mark.parametrize(
    ("loss_config", "expected"),
    [
        ({"name": "dpo", "beta": 0.1}, [math.log(1 + math.exp(-0.3)), math.log(1 + math.exp(0.3))]),
        (
            {"name": "dpo", "beta": 0.1, "label_smoothing": 0.2},
            [-0.8 * log_sigmoid(0.1 * h) - 0.2 * log_sigmoid(-0.1 * h) for h in MARGINS],
        ),
        ({"name": "ipo", "beta": 0.2}, [(3 - 2.5) ** 2, (-3 - 2.5) ** 2]),
        ({"name": "hinge", "beta": 0.1}, [0.7, 1.3]),
        ({"name": "reference_free", "beta": 0.1}, [math.log(1 + math.exp(-0.4)), math.log(1 + math.exp(0.5))]),
        ({"name": "sft"}, [10.0 / 5, 20.0 / 8]),
    ],
    ids=["dpo", "cdpo", "ipo", "hinge", "reference_free", "sft"],
)
def test_the_loss_config_builds_the_loss_with_its_hyperparameters(logps, loss_config, expected):
    from pydantic import TypeAdapter

    from dpo_lib.spec import LossConfig

    loss = build_loss(TypeAdapter(LossConfig).validate_python(loss_config))
    assert type(loss) is LOSSES[loss_config["name"]]
    assert {k: getattr(loss, k) for k in loss_config if k != "name"} == {
        k: v for k, v in loss_config.items() if k != "name"
    }
    pi_c, pi_r, ref_c, ref_r = logps
    reference = pair(ref_c, ref_r) if loss.needs_reference else None
    assert_values(loss(pair(pi_c, pi_r, torch.tensor([5, 8])), reference).losses, expected)


def test_every_loss_config_has_a_loss_and_takes_its_fields():
    assert {config.model_fields["name"].default for config in LOSS_CONFIGS} == set(LOSSES)
    for config in LOSS_CONFIGS:
        build_loss(config())  # the config's fields are the loss's parameters, defaults included


def test_only_reference_based_losses_need_a_reference_model():
    assert [name for name, loss in LOSSES.items() if loss.needs_reference] == ["dpo", "ipo", "hinge"]
