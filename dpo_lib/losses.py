"""Preference losses as objects holding their hyper-parameters, built from the ``loss`` config.

Each takes the policy's and the reference's summed log-probabilities of a batch of pairs and
returns per-pair losses and the implicit rewards ``β·(π − ref)`` (detached) the metrics report.
Notation, per pair: ``π_c``, ``π_r`` the policy's log-probabilities of the chosen and rejected
completions (summed over completion tokens), ``ref_c``, ``ref_r`` the reference model's, and

    h = (π_c − π_r) − (ref_c − ref_r)          (the log-ratio margin)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
import torch.nn.functional as F

from dpo_lib.training.logps import PairLogps

if TYPE_CHECKING:
    from dpo_lib.spec import LossConfig


class LossOutput(NamedTuple):
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,), detached
    rejected_rewards: torch.Tensor  # (B,), detached


class PreferenceLoss:
    """A loss over pairs; ``needs_reference`` says whether ``reference`` must be given."""

    needs_reference: ClassVar[bool] = True

    def __call__(self, policy: PairLogps, reference: PairLogps | None) -> LossOutput:
        raise NotImplementedError


class _MarginLoss(PreferenceLoss):
    """A loss of the log-ratio margin ``h``, with rewards ``β·(π − ref)``."""

    def __init__(self, beta: float) -> None:
        self.beta = beta

    def __call__(self, policy: PairLogps, reference: PairLogps | None) -> LossOutput:
        assert reference is not None, f"{type(self).__name__} needs the reference's log-probs"
        h = (policy.chosen - policy.rejected) - (reference.chosen - reference.rejected)
        chosen_rewards = (self.beta * (policy.chosen - reference.chosen)).detach()
        rejected_rewards = (self.beta * (policy.rejected - reference.rejected)).detach()
        return LossOutput(self.margin_loss(h), chosen_rewards, rejected_rewards)

    def margin_loss(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DPOLoss(_MarginLoss):
    """Sigmoid DPO (Rafailov et al., 2023), with label smoothing ε giving conservative DPO (cDPO):

    L = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h)
    """

    def __init__(self, beta: float, label_smoothing: float = 0.0) -> None:
        super().__init__(beta)
        self.label_smoothing = label_smoothing

    def margin_loss(self, h: torch.Tensor) -> torch.Tensor:
        eps = self.label_smoothing
        return -(1 - eps) * F.logsigmoid(self.beta * h) - eps * F.logsigmoid(-self.beta * h)


class IPOLoss(_MarginLoss):
    """IPO (Azar et al., 2023) on summed log-probs (no length normalisation):

    L = (h − 1/(2β))²
    """

    def margin_loss(self, h: torch.Tensor) -> torch.Tensor:
        return (h - 1 / (2 * self.beta)) ** 2


class HingeLoss(_MarginLoss):
    """Hinge on the scaled margin (SLiC-style):

    L = max(0, 1 − β·h)
    """

    def margin_loss(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(1 - self.beta * h)


class ReferenceFreeLoss(DPOLoss):
    """Sigmoid DPO against a uniform reference (ref_c = ref_r = 0), so h = π_c − π_r:

    L = −(1 − ε)·log σ(β·(π_c − π_r)) − ε·log σ(−β·(π_c − π_r))
    """

    needs_reference = False

    def __call__(self, policy: PairLogps, reference: PairLogps | None) -> LossOutput:
        zero = torch.zeros_like(policy.chosen)
        return super().__call__(policy, PairLogps(zero, zero, None, None))


class SFTLoss(PreferenceLoss):
    """Negative log-likelihood of the chosen completion, per token (rejected ones are ignored):

    L = −π_c / n_c          (n_c: completion tokens of the chosen sequence)

    Rewards are the per-token log-likelihoods, for monitoring only.
    """

    needs_reference = False

    def __call__(self, policy: PairLogps, reference: PairLogps | None) -> LossOutput:
        per_token = policy.chosen / policy.chosen_tokens.clamp(min=1)
        return LossOutput(-per_token, per_token.detach(), torch.zeros_like(per_token))


LOSSES: dict[str, type[PreferenceLoss]] = {
    "dpo": DPOLoss,
    "ipo": IPOLoss,
    "hinge": HingeLoss,
    "reference_free": ReferenceFreeLoss,
    "sft": SFTLoss,
}


def build_loss(config: LossConfig) -> PreferenceLoss:
    """The loss the ``loss`` config names, with its hyper-parameters: ``DPOLoss(beta=0.1, label_smoothing=0)``."""
    return LOSSES[config.name](**config.model_dump(exclude={"name"}))
