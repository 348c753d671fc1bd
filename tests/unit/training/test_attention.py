"""``varlen`` attention: packed sequences attend within themselves, from the packer's boundaries.

On a CPU the same plumbing runs an exact masked-SDPA fallback (the GPU kernel is FlashAttention),
so these tests pin down what both must give: the log-probs of the plain padded batch.
"""

from __future__ import annotations

import random

import pytest
import torch

from dpo_lib.data.tokenize import TokenizedPair, collate_pairs, pack_pairs
from dpo_lib.spec import BasicTrainerConfig as options
from dpo_lib.training.logps import SequenceLogpModel
from dpo_lib.training.trainer import TrainingError, load_causal_lm


def random_pairs(n: int, seed: int = 0) -> list[TokenizedPair]:
    rng = random.Random(seed)

    def tokens(lo: int, hi: int) -> list[int]:
        return [rng.randrange(3, 200) for _ in range(rng.randint(lo, hi))]

    return [TokenizedPair(tokens(2, 20), tokens(1, 15), tokens(1, 15)) for _ in range(n)]


def test_packed_batches_carry_boundaries_that_cover_the_row_and_match_the_position_restarts():
    batch = pack_pairs(random_pairs(5), pad_token_id=0, pad_to_multiple_of=64)
    cu = batch["cu_seq_lens"].tolist()
    width = batch["input_ids"].shape[1]
    assert cu[0] == 0 and cu[-1] == width and cu == sorted(cu)
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [c for c in cu[:-1] if c < width]  # every sequence and the tail start where positions restart
    assert len(cu) == 2 * 5 + 2  # the tail is always there, empty or not: one shape for every batch
    longest = max(b - a for a, b in zip(cu, cu[1:], strict=False))
    assert batch["max_seq_len"] >= longest and batch["max_seq_len"] & (batch["max_seq_len"] - 1) == 0


@pytest.mark.parametrize(("pairs", "multiple"), [(1, 64), (4, 64), (4, 1)])  # 1: the tail padding is empty
def test_varlen_attention_gives_the_log_probs_of_the_padded_batch(tiny_model_dir, pairs, multiple):
    data = random_pairs(pairs, seed=pairs)
    torch.manual_seed(0)
    plain = SequenceLogpModel(load_causal_lm(str(tiny_model_dir), options(attn_implementation="sdpa")))
    varlen = SequenceLogpModel(load_causal_lm(str(tiny_model_dir), options(attn_implementation="varlen", packing=True)))
    assert varlen.causal_lm.config._attn_implementation == "varlen"

    expected = plain(collate_pairs(data, pad_token_id=0))
    got = varlen(pack_pairs(data, pad_token_id=0, pad_to_multiple_of=multiple))
    torch.testing.assert_close(got.chosen, expected.chosen, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.rejected, expected.rejected, rtol=1e-5, atol=1e-5)
    assert got.chosen_tokens.tolist() == expected.chosen_tokens.tolist()


def test_varlen_gradients_match_the_padded_batch(tiny_model_dir):
    data = random_pairs(3, seed=7)
    models = [
        SequenceLogpModel(load_causal_lm(str(tiny_model_dir), options(attn_implementation=attn, packing=True)))
        for attn in ("sdpa", "varlen")
    ]
    for model, batch in zip(models, (collate_pairs(data, 0), pack_pairs(data, 0)), strict=True):
        out = model(batch)
        (out.chosen - out.rejected).sum().backward()
    for (name, a), (_, b) in zip(*(m.named_parameters() for m in models), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_varlen_without_packing_is_refused_naming_both_settings(tiny_model_dir):
    with pytest.raises(TrainingError, match="varlen needs trainer.packing"):
        load_causal_lm(str(tiny_model_dir), options(attn_implementation="varlen", packing=False))


def test_a_training_step_runs_with_varlen_attention(make_config):
    from dpo_lib.training.recipe import build_trainer

    trainer = build_trainer(make_config("trainer.packing=true", "trainer.attn_implementation=varlen", "max_steps=2"))
    trainer.setup()
    metrics = trainer.train()
    assert trainer.step == 2 and torch.isfinite(torch.tensor(metrics["loss"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the FlashAttention kernel needs a GPU")
def test_the_gpu_kernel_is_as_close_to_fp32_attention_as_bf16_sdpa_is_forward_and_backward():
    from dpo_lib.training.attention import _flash_varlen, _masked_sdpa

    torch.manual_seed(0)
    lengths = [37, 200, 1, 64, 129]
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], device="cuda", dtype=torch.int32)
    total = sum(lengths)
    inputs = [torch.randn(total, heads, 64, device="cuda") for heads in (8, 2, 2)]  # grouped key/value heads
    weights = torch.randn(total, 8, 64, device="cuda")

    def run(attend, dtype):
        q, k, v = (t.to(dtype).detach().requires_grad_() for t in inputs)
        out = attend(q, k, v)
        (out.float() * weights).sum().backward()
        return [t.float() for t in (out.detach(), q.grad, k.grad, v.grad)]

    exact = run(lambda q, k, v: _masked_sdpa(q, k, v, cu, None), torch.float32)
    sdpa_bf16 = run(lambda q, k, v: _masked_sdpa(q, k, v, cu, None), torch.bfloat16)
    flash = run(lambda q, k, v: _flash_varlen(q, k, v, cu, 256, None), torch.bfloat16)
    for name, want, ours, theirs in zip(("out", "dq", "dk", "dv"), exact, flash, sdpa_bf16, strict=True):
        ours_error, sdpa_error = (want - ours).abs().max(), (want - theirs).abs().max()
        assert ours_error <= 2 * sdpa_error + 1e-3, (name, float(ours_error), float(sdpa_error))
