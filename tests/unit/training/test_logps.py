"""Summed completion log-probabilities (dpo_lib/training/logps.py) against a plain reference."""

from __future__ import annotations

import pytest
import torch

from dpo_lib.data.tokenize import IGNORE_INDEX
from dpo_lib.training.logps import concatenated_logps, sequence_logps


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


def test_sequence_logps_matches_log_softmax_gather_reference():
    logits, labels = random_batch()
    sums, counts = sequence_logps(logits, labels)
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


class FixedLogits(torch.nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, input_ids, attention_mask, use_cache):
        assert input_ids.shape == attention_mask.shape == self.logits.shape[:2]
        return type("Out", (), {"logits": self.logits})()


def test_concatenated_logps_splits_rows_into_chosen_then_rejected():
    logits, labels = random_batch()
    batch = {
        "input_ids": torch.zeros_like(labels),
        "attention_mask": torch.ones_like(labels),
        "labels": labels,
    }
    out = concatenated_logps(FixedLogits(logits), batch)
    sums, counts = reference_logps(logits, labels)
    assert out.chosen.tolist() == pytest.approx(sums[:2], abs=1e-4)
    assert out.rejected.tolist() == pytest.approx(sums[2:], abs=1e-4)
    assert out.chosen_tokens.tolist() == counts[:2]
    assert out.rejected_tokens.tolist() == counts[2:]
