"""The preference losses against numbers worked out by hand from the formulas in dpo_lib/losses.py.

Two pairs throughout, with summed log-probabilities chosen so the margins are round:

    pair 0: π_c=-10, π_r=-14, ref_c=-11, ref_r=-12  ->  h = (-10+14) - (-11+12) = 3
    pair 1: π_c=-20, π_r=-15, ref_c=-18, ref_r=-16  ->  h = (-20+15) - (-18+16) = -3
"""

from __future__ import annotations

import math

import pytest
import torch

from dpo_lib.losses import (
    compute_loss,
    dpo_loss,
    hinge_loss,
    ipo_loss,
    needs_reference,
    reference_free_loss,
    sft_loss,
)

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


def assert_values(actual: torch.Tensor, expected: list[float]) -> None:
    assert actual.shape == (len(expected),)
    assert actual.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_dpo_loss_is_minus_log_sigmoid_of_beta_times_margin(logps):
    # pair 0: -log σ(0.3) = log(1 + e^-0.3) = 0.554355...; pair 1: log(1 + e^0.3) = 0.854355...
    expected = [math.log(1 + math.exp(-0.3)), math.log(1 + math.exp(0.3))]
    assert expected[0] == pytest.approx(0.5543552, abs=1e-6)
    assert_values(dpo_loss(*logps, beta=BETA).losses, expected)


def test_dpo_loss_with_label_smoothing_is_conservative_dpo(logps):
    eps = 0.2
    expected = [-(1 - eps) * log_sigmoid(BETA * h) - eps * log_sigmoid(-BETA * h) for h in MARGINS]
    # pair 0 by hand: 0.8 * 0.5543552 + 0.2 * 0.8543552 = 0.6143552
    assert expected[0] == pytest.approx(0.6143552, abs=1e-6)
    assert_values(dpo_loss(*logps, beta=BETA, label_smoothing=eps).losses, expected)


def test_ipo_loss_is_squared_distance_of_margin_from_half_inverse_beta(logps):
    # 1/(2β) = 5: (3 - 5)^2 = 4 and (-3 - 5)^2 = 64
    assert_values(ipo_loss(*logps, beta=BETA).losses, [4.0, 64.0])


def test_hinge_loss_below_the_hinge_is_one_minus_beta_margin(logps):
    # 1 - 0.1*3 = 0.7 and 1 - 0.1*(-3) = 1.3
    out = hinge_loss(*logps, beta=BETA)
    assert_values(out.losses, [0.7, 1.3])
    out.losses.sum().backward()
    # d/dπ_c of (1 - β·h) is -β on the active side of the hinge
    assert logps[0].grad.tolist() == pytest.approx([-BETA, -BETA])


def test_hinge_loss_is_zero_with_zero_gradient_past_the_hinge():
    # h = 20 and h = 10 (exactly at the hinge: 1 - 0.1*10 = 0)
    pi_c = torch.tensor([0.0, 0.0], requires_grad=True)
    out = hinge_loss(pi_c, torch.tensor([-20.0, -10.0]), torch.zeros(2), torch.zeros(2), beta=BETA)
    assert_values(out.losses, [0.0, 0.0])
    out.losses.sum().backward()
    assert pi_c.grad.tolist() == [0.0, 0.0]


def test_reference_free_loss_uses_policy_margin_only(logps):
    pi_c, pi_r, _, _ = logps
    # h = π_c - π_r = 4 and -5: log(1 + e^-0.4), log(1 + e^0.5)
    expected = [math.log(1 + math.exp(-0.4)), math.log(1 + math.exp(0.5))]
    out = reference_free_loss(pi_c, pi_r, beta=BETA)
    assert_values(out.losses, expected)
    # rewards against a zero reference: β·π
    assert_values(out.chosen_rewards, [-1.0, -2.0])
    assert_values(out.rejected_rewards, [-1.4, -1.5])


def test_reference_free_loss_with_label_smoothing():
    eps = 0.2
    out = reference_free_loss(torch.tensor([-10.0]), torch.tensor([-14.0]), beta=BETA, label_smoothing=eps)
    assert_values(out.losses, [-(1 - eps) * log_sigmoid(0.4) - eps * log_sigmoid(-0.4)])


def test_sft_loss_is_per_token_negative_log_likelihood_of_chosen():
    pi_c = torch.tensor([-12.0, -5.0], requires_grad=True)
    out = sft_loss(pi_c, torch.tensor([4, 0]))  # 0 counted tokens must not divide by zero
    assert_values(out.losses, [3.0, 5.0])
    assert_values(out.chosen_rewards, [-3.0, -5.0])
    assert_values(out.rejected_rewards, [0.0, 0.0])
    assert not out.chosen_rewards.requires_grad
    out.losses.sum().backward()
    assert pi_c.grad.tolist() == pytest.approx([-0.25, -1.0])


@pytest.mark.parametrize("loss_fn", [dpo_loss, ipo_loss, hinge_loss], ids=["dpo", "ipo", "hinge"])
def test_rewards_are_beta_times_policy_minus_reference_and_detached(logps, loss_fn):
    out = loss_fn(*logps, beta=BETA)
    # β(π_c - ref_c): 0.1*(-10+11) = 0.1, 0.1*(-20+18) = -0.2; β(π_r - ref_r): -0.2, 0.1
    assert_values(out.chosen_rewards, [0.1, -0.2])
    assert_values(out.rejected_rewards, [-0.2, 0.1])
    assert not out.chosen_rewards.requires_grad
    assert not out.rejected_rewards.requires_grad
    assert out.losses.requires_grad


def test_dpo_gradient_pushes_chosen_up_and_rejected_down(logps):
    pi_c, pi_r, _, _ = logps
    dpo_loss(*logps, beta=BETA).losses.sum().backward()
    # dL/dπ_c = -β·σ(-β·h): pair 0: -0.1·σ(-0.3)
    sigma = 1 / (1 + math.exp(0.3))
    assert pi_c.grad[0].item() == pytest.approx(-BETA * sigma, rel=1e-5)
    assert pi_r.grad[0].item() == pytest.approx(BETA * sigma, rel=1e-5)


@pytest.mark.parametrize(
    ("loss_cfg", "expected"),
    [
        ({"name": "dpo", "beta": 0.1}, [math.log(1 + math.exp(-0.3)), math.log(1 + math.exp(0.3))]),
        (
            {"name": "dpo", "beta": 0.1, "label_smoothing": 0.2},
            [-0.8 * log_sigmoid(0.1 * h) - 0.2 * log_sigmoid(-0.1 * h) for h in MARGINS],
        ),
        ({"name": "ipo", "beta": 0.2}, [(3 - 2.5) ** 2, (-3 - 2.5) ** 2]),
        ({"name": "hinge", "beta": 0.1}, [0.7, 1.3]),
        (
            {"name": "reference_free", "beta": 0.1},
            [math.log(1 + math.exp(-0.4)), math.log(1 + math.exp(0.5))],
        ),
        ({"name": "sft"}, [10.0 / 5, 20.0 / 8]),
    ],
    ids=["dpo", "cdpo", "ipo", "hinge", "reference_free", "sft"],
)
def test_compute_loss_dispatches_on_name_with_the_configured_beta(logps, loss_cfg, expected):
    uses_reference = needs_reference(loss_cfg["name"])
    pi_c, pi_r, ref_c, ref_r = logps
    out = compute_loss(
        loss_cfg,
        pi_c,
        pi_r,
        ref_c if uses_reference else None,
        ref_r if uses_reference else None,
        torch.tensor([5, 8]),
    )
    assert_values(out.losses, expected)


def test_compute_loss_rejects_an_unknown_loss_name(logps):
    with pytest.raises(ValueError, match="unknown loss 'kto'"):
        compute_loss({"name": "kto", "beta": 0.1}, *logps, torch.tensor([1, 1]))


def test_only_reference_based_losses_need_a_reference_model():
    assert [n for n in ("dpo", "ipo", "hinge", "reference_free", "sft") if needs_reference(n)] == [
        "dpo",
        "ipo",
        "hinge",
    ]
