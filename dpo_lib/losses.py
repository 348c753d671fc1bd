"""Preference losses as pure functions of summed sequence log-probabilities.

Notation, per pair: ``π_c``, ``π_r`` are the policy's log-probabilities of the
chosen and rejected completions (summed over completion tokens), ``ref_c``,
``ref_r`` the reference model's, and

    h = (π_c − π_r) − (ref_c − ref_r)          (the log-ratio margin)

Every loss returns per-pair ``losses`` plus the implicit rewards
``β·(π − ref)`` (detached), which the metrics report.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class LossOutput(NamedTuple):
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,), detached
    rejected_rewards: torch.Tensor  # (B,), detached


def _rewards(beta: float, policy: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    return (beta * (policy - reference)).detach()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """Sigmoid DPO, with label smoothing ε giving conservative DPO (cDPO):

    L = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    return LossOutput(losses, _rewards(beta, policy_chosen, ref_chosen), _rewards(beta, policy_rejected, ref_rejected))


def ipo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> LossOutput:
    """IPO on summed log-probs (no length normalisation):

    L = (h − 1/(2β))²
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = (h - 1 / (2 * beta)) ** 2
    return LossOutput(losses, _rewards(beta, policy_chosen, ref_chosen), _rewards(beta, policy_rejected, ref_rejected))


def hinge_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> LossOutput:
    """Hinge on the scaled margin:

    L = max(0, 1 − β·h)
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    losses = torch.relu(1 - beta * h)
    return LossOutput(losses, _rewards(beta, policy_chosen, ref_chosen), _rewards(beta, policy_rejected, ref_rejected))


def reference_free_loss(
    policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, beta: float, label_smoothing: float = 0.0
) -> LossOutput:
    """Sigmoid DPO against a uniform reference (ref_c = ref_r = 0), so h = π_c − π_r:

    L = −(1 − ε)·log σ(β·(π_c − π_r)) − ε·log σ(−β·(π_c − π_r))
    """
    zero = torch.zeros_like(policy_chosen)
    return dpo_loss(policy_chosen, policy_rejected, zero, zero, beta, label_smoothing)


def sft_loss(policy_chosen: torch.Tensor, chosen_tokens: torch.Tensor) -> LossOutput:
    """Negative log-likelihood of the chosen completion, per token:

        L = −π_c / n_c          (n_c: completion tokens of the chosen sequence)

    Rewards are the per-token log-likelihoods, for monitoring only.
    """
    per_token = policy_chosen / chosen_tokens.clamp(min=1)
    return LossOutput(-per_token, per_token.detach(), torch.zeros_like(per_token))


def needs_reference(loss_name: str) -> bool:
    """Whether the loss compares against a reference model (and so needs one loaded)."""
    return loss_name in ("dpo", "ipo", "hinge")


def compute_loss(
    loss_cfg: dict,
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor | None,
    ref_rejected: torch.Tensor | None,
    chosen_tokens: torch.Tensor,
) -> LossOutput:
    """Dispatch on ``loss_cfg["name"]`` (the ``loss`` config group)."""
    name = loss_cfg["name"]
    if name == "dpo":
        return dpo_loss(
            policy_chosen,
            policy_rejected,
            ref_chosen,
            ref_rejected,
            loss_cfg["beta"],
            loss_cfg.get("label_smoothing", 0.0),
        )
    if name == "ipo":
        return ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss_cfg["beta"])
    if name == "hinge":
        return hinge_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, loss_cfg["beta"])
    if name == "reference_free":
        return reference_free_loss(
            policy_chosen, policy_rejected, loss_cfg["beta"], loss_cfg.get("label_smoothing", 0.0)
        )
    if name == "sft":
        return sft_loss(policy_chosen, chosen_tokens)
    raise ValueError(f"unknown loss {name!r}")
