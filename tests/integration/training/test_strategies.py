"""Trainer strategies and speed features must not change what is computed.

FSDP and tensor parallel run for real here, as two CPU processes talking gloo, through
the same ``python -m dpo_lib train trainer=...`` command users run (it starts torchrun).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_lib.spec import BasicTrainerConfig
from dpo_lib.training.trainer import BasicTrainer, resolve_auto
from tests.support.training import unreadable_by_others

COMPARED = ("loss", "logps/chosen", "logps/rejected", "rewards/margins", "grad_norm")


def batch_logps(trainer: BasicTrainer, index: int = 0):
    batch = trainer.batches.get(index)
    with torch.no_grad():
        loss, _, logps = trainer.batch_loss(trainer.policy, batch, trainer.reference_logps)
    return loss, logps


@pytest.mark.parametrize(
    "features",
    [
        ["trainer.packing=false", "trainer.logp_chunk_size=null"],
        ["trainer.packing=true", "trainer.logp_chunk_size=null"],
        ["trainer.packing=false", "trainer.logp_chunk_size=7"],
        ["trainer.packing=true", "trainer.logp_chunk_size=1024"],
        ["trainer.packing=true", "trainer.attn_implementation=varlen", "trainer.logp_chunk_size=1024"],
    ],
)
def test_packing_and_chunked_head_leave_logps_unchanged(make_config, features):
    plain = BasicTrainer(make_config("trainer.packing=false", "trainer.logp_chunk_size=null"))
    plain.setup()
    fast = BasicTrainer(make_config(*features))
    fast.setup()
    (loss_a, a), (loss_b, b) = batch_logps(plain), batch_logps(fast)
    torch.testing.assert_close(b.chosen, a.chosen, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(b.rejected, a.rejected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(loss_b, loss_a, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "device,switches,expected",
    [
        ("cuda", {}, {"packing": True, "compile": True, "compile_logp_head": True}),
        ("cpu", {}, {"packing": False, "compile": False, "compile_logp_head": False,
                     "attn_implementation": "sdpa"}),
        ("cuda", {"compile": False}, {"compile": False, "compile_logp_head": False}),
        ("cpu", {"compile_logp_head": True}, {"compile": False, "compile_logp_head": True}),
    ],
    ids=["gpu-fast-path", "cpu-simple-path", "head-follows-compile", "explicit-head-kept"],
)  # fmt: skip
def test_auto_switches_resolve_per_device(device, switches, expected):
    resolved = resolve_auto(BasicTrainerConfig(**switches), torch.device(device))
    assert {key: getattr(resolved, key) for key in expected} == expected
    if device == "cuda" and not switches:
        assert resolved.attn_implementation in ("varlen", "flex_attention")


def test_the_compile_logp_head_switch_reaches_policy_and_reference(make_config):
    trainer = BasicTrainer(make_config("trainer.compile_logp_head=true"))
    trainer.setup()
    assert trainer.policy.compile_head and trainer.reference.compile_head
    assert not BasicTrainer(make_config()).options.compile_logp_head


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_chunked_head_gradients_match_the_full_logits_path(compiled):
    from dpo_lib.training.logps import token_logps

    torch.manual_seed(0)
    hidden = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    targets[::5] = -100
    upstream = torch.randn(37, dtype=torch.float64)
    grads = []
    for chunk in (None, 8):
        hidden.grad = weight.grad = None
        out = token_logps(hidden, weight, targets, chunk, compiled=compiled)
        (out * upstream).sum().backward()
        grads.append((out.detach(), hidden.grad.clone(), weight.grad.clone()))
    for full, chunked in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(chunked.double(), full.double())


def test_precomputed_reference_logps_match_the_live_reference_and_are_cached(make_config, caplog):
    live = BasicTrainer(make_config())
    live.setup()
    cached = BasicTrainer(make_config("trainer.precompute_ref_logps=true"))
    cached.setup()
    assert cached.reference is None and live.reference is not None
    for index in range(3):
        batch = live.batches.get(index)
        with torch.no_grad():
            expected = live.reference(batch)
        got = cached.reference_logps.lookup(batch["pair_indices"])
        torch.testing.assert_close(got.chosen, expected.chosen, atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(got.rejected, expected.rejected, atol=1e-4, rtol=1e-5)
    (cache_file,) = (Path(cached.run_dir) / "cache").glob("ref_logps-*.pt")
    with caplog.at_level("INFO"):
        BasicTrainer(make_config("trainer.precompute_ref_logps=true")).setup()
    assert f"loaded reference log-probs from {cache_file}" in caplog.text


def run_cli(cfg_overrides: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "dpo_lib", "train", *cfg_overrides],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def cli_base(tiny_model_dir, toy_dataset):
    return [
        "exp_name=parity",
        f"model.name_or_path={tiny_model_dir}",
        f"datasets.toy.uri={toy_dataset}",
        "batch_size=4",
        "warmup_steps=0",
        "log_every=1",
        "eval_every=0",
        "trainer.device=cpu",
    ]


@pytest.fixture(scope="module")
def basic_run(cli_base, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("basic")
    run_cli([*cli_base, "max_steps=1", "checkpoint_every=0", f"run_dir={run_dir}"])
    return run_dir


@pytest.mark.parametrize(
    ("strategy", "features"),
    [
        ("fsdp", []),
        ("tensor_parallel", []),
        # Packed rows with varlen attention, each process holding half of the heads.
        ("tensor_parallel", ["trainer.packing=true", "trainer.attn_implementation=varlen"]),
    ],
)
def test_distributed_strategies_match_basic_on_the_same_batch(cli_base, basic_run, strategy, features, tmp_path):
    run_cli([*cli_base, "max_steps=1", "checkpoint_every=0", f"trainer={strategy}", "trainer.device=cpu",
             "trainer.nproc=2", *features, f"run_dir={tmp_path}"])  # fmt: skip
    expected = json.loads((basic_run / "metrics.json").read_text())["train"]
    got = json.loads((tmp_path / "metrics.json").read_text())["train"]
    for name in COMPARED:  # step 1's metrics are the first batch's, before any update
        assert got[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-4), name
    final, reference = (
        load_file(tmp_path / "final" / "model.safetensors"),
        load_file(basic_run / "final" / "model.safetensors"),
    )
    assert final.keys() == reference.keys()
    for key in reference:  # and the first optimizer step moved the weights the same way
        torch.testing.assert_close(final[key], reference[key], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="NCCL and bf16 kernels need GPUs")
@pytest.mark.parametrize("strategy", ["fsdp", "tensor_parallel"])
def test_distributed_strategies_match_basic_on_gpus_with_nccl(cli_base, strategy, tmp_path):
    """The same comparison on GPUs, NCCL between up to 2 of them, bf16: equal within bf16 tolerance."""
    gpu = [*cli_base, "max_steps=1", "checkpoint_every=0", "trainer.device=cuda", "trainer.compile=false"]
    run_cli([*gpu, f"run_dir={tmp_path / 'basic'}"])
    nproc = min(torch.cuda.device_count(), 2)  # the tiny model's 2 key-value heads split over at most 2
    run_cli([*gpu, f"trainer={strategy}", f"trainer.nproc={nproc}", f"run_dir={tmp_path / strategy}"])
    expected = json.loads((tmp_path / "basic" / "metrics.json").read_text())["train"]
    got = json.loads((tmp_path / strategy / "metrics.json").read_text())["train"]
    for name in COMPARED:
        assert got[name] == pytest.approx(expected[name], rel=3e-2, abs=1e-2), name
    final = load_file(tmp_path / strategy / "final" / "model.safetensors")
    reference = load_file(tmp_path / "basic" / "final" / "model.safetensors")
    # Adam's first step moves each weight by about lr (5e-4) whatever the gradient's size, and bf16 can flip
    # the sign of tiny gradients: this checks the gathered weights are the trained model, in the same layout.
    for key in reference:
        torch.testing.assert_close(final[key], reference[key], atol=1.5e-3, rtol=0)


def test_fsdp_resume_from_sharded_checkpoint_equals_uninterrupted(cli_base, tmp_path):
    fsdp = [*cli_base, "trainer=fsdp", "trainer.device=cpu", "trainer.nproc=2", "checkpoint_every=2"]
    run_cli([*fsdp, "max_steps=4", f"run_dir={tmp_path / 'straight'}"])
    run_cli([*fsdp, "max_steps=2", f"run_dir={tmp_path / 'resumed'}"])
    assert (tmp_path / "resumed" / "checkpoints" / "step-2" / "COMPLETE").exists()
    run_cli([*fsdp, "max_steps=4", f"run_dir={tmp_path / 'resumed'}"])
    straight = load_file(tmp_path / "straight" / "final" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "final" / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], atol=1e-6, rtol=1e-6)
    # shards, RNG states and the final model are readable by a retry or evaluate running as another user
    assert unreadable_by_others(tmp_path / "resumed" / "checkpoints") == []
    assert unreadable_by_others(tmp_path / "resumed" / "final") == []
