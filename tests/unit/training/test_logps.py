"""Summed completion log-probabilities (dpo_lib/training/logps.py) against a plain reference."""

from __future__ import annotations

import pytest
import torch

from dpo_lib.data.tokenize import IGNORE_INDEX
from dpo_lib.training.logps import shift_targets, token_logps


def reference_logps(logits: torch.Tensor, labels: torch.Tensor) -> tuple[list[float], list[int]]:
    """Token t's label is predicted by position t-1: log_softmax, gather, sum over unmasked labels."""
    sums, counts = [], []
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    for row in range(labels.shape[0]):
        total, count = 0.0, 0
        for t in range(1, labels.shape[1]):
            label = int(labels[row, t])
            if label != IGNORE_INDEX:
                total += float(log_probs[row, t - 1, label])
                count += 1
        sums.append(total)
        counts.append(count)
    return sums, counts


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor, chunk: int | None = None):
    """The library's path on given logits: ``token_logps`` with an identity output head, summed per row."""
    rows, length, vocab = logits.shape
    targets = shift_targets(labels)
    head = torch.eye(vocab, dtype=logits.dtype)
    flat = token_logps(logits.reshape(-1, vocab), head, targets.flatten(), chunk)
    return flat.reshape(rows, length).sum(-1), (targets != IGNORE_INDEX).sum(-1)


def random_batch(rows: int = 4, length: int = 9, vocab: int = 13, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=gen) * 3
    labels = torch.randint(0, vocab, (rows, length), generator=gen)
    # prompt-like masked prefixes and padding-like masked suffixes of different lengths,
    # a masked gap in the middle, and one row with nothing to count
    labels[0, :3] = IGNORE_INDEX
    labels[1, 6:] = IGNORE_INDEX
    labels[2, 2:5] = IGNORE_INDEX
    labels[3, :] = IGNORE_INDEX
    return logits, labels


@pytest.mark.parametrize("chunk", [None, 4], ids=["full-logits", "chunked"])
def test_sequence_logps_matches_log_softmax_gather_reference(chunk):
    logits, labels = random_batch()
    sums, counts = sequence_logps(logits, labels, chunk)
    expected_sums, expected_counts = reference_logps(logits, labels)
    assert counts.tolist() == expected_counts == [6, 5, 5, 0]
    assert sums.tolist() == pytest.approx(expected_sums, abs=1e-4)
    assert sums.dtype == torch.float32


def test_sequence_logps_ignores_the_label_of_the_first_position():
    logits, labels = random_batch()
    changed = labels.clone()
    changed[:, 0] = (labels[:, 0] + 1) % logits.shape[-1]
    assert torch.equal(sequence_logps(logits, labels)[0], sequence_logps(logits, changed)[0])


def test_sequence_logps_ignores_logits_at_masked_and_last_positions():
    logits, labels = random_batch()
    noisy = logits.clone()
    noisy[:, -1] += 100.0  # the last position predicts nothing
    noisy[3] += 50.0  # row 3 is fully masked
    noisy[1, 5:] -= 50.0  # row 1 counts labels up to t=5, predicted at positions <= 4
    assert torch.allclose(sequence_logps(logits, labels)[0], sequence_logps(noisy, labels)[0])


def test_sequence_logps_in_bf16_is_computed_in_fp32():
    logits, labels = random_batch()
    sums, _ = sequence_logps(logits.bfloat16(), labels)
    expected, _ = reference_logps(logits.bfloat16().float(), labels)
    assert sums.dtype == torch.float32
    assert sums.tolist() == pytest.approx(expected, abs=1e-3)


def test_sequence_logps_is_differentiable():
    logits, labels = random_batch()
    logits.requires_grad_(True)
    sequence_logps(logits, labels)[0].sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert (logits.grad[3] == 0).all()  # nothing counted in row 3
