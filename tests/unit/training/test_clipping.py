"""Clipping folded into the fused AdamW step updates weights exactly as clip_grad_norm_ then step."""

import math

import pytest
import torch

from dpo_lib.training.clipping import EPS, clip_gradients

# Adam's first step barely depends on the gradients' scale (m / sqrt(v)); a large epsilon
# makes it depend on it, so a clipping that is not applied shows in the weights.
ADAM_EPS = 0.1


def _model_with_grads(scale: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
    (model(torch.randn(8, 16)).pow(2).sum() * scale).backward()
    return model


def _step_with_clip_grad_norm(model: torch.nn.Module, max_norm: float) -> torch.Tensor:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, eps=ADAM_EPS, foreach=False)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    return norm


@pytest.mark.parametrize("fused", [True, False], ids=["fused-adamw", "foreach-adamw"])
@pytest.mark.parametrize("scale,max_norm", [(100.0, 1.0), (1e-4, 1.0), (100.0, math.inf)],
                         ids=["clipped", "below-max", "no-limit"])  # fmt: skip
def test_clip_gradients_then_step_matches_clip_grad_norm(fused: bool, scale: float, max_norm: float) -> None:
    reference = _model_with_grads(scale)
    model = _model_with_grads(scale)
    expected_norm = _step_with_clip_grad_norm(reference, max_norm)

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=1e-2, eps=ADAM_EPS, fused=fused, foreach=None if fused else True
    )
    norm = clip_gradients([p.grad for p in model.parameters()], max_norm, optimizer)
    optimizer.step()

    assert torch.allclose(norm, expected_norm, rtol=1e-6)
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_fused_clipping_leaves_gradients_for_the_optimizer_to_scale() -> None:
    model = _model_with_grads(100.0)
    before = [p.grad.clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)

    norm = clip_gradients([p.grad for p in model.parameters()], 1.0, optimizer)

    assert norm > 1.0
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), before, strict=True))
    assert torch.allclose(optimizer.grad_scale, norm + EPS)
    assert "grad_scale" not in str(optimizer.state_dict())


def test_no_gradients_gives_zero_norm() -> None:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-2)
    assert float(clip_gradients([], 1.0, optimizer)) == 0.0
