"""Multi-process strategies: FSDP2 (data parallel, sharded) and tensor parallel (DTensor plans).

Both run one process per device under torchrun (``python -m dpo_lib train trainer=fsdp``
starts torchrun itself, see ``launch.py``), NCCL on GPUs and gloo on CPUs, and save
sharded checkpoints with ``torch.distributed.checkpoint`` in the same ``step-N``
layout and with the same atomic commit as the single-device trainer. FSDP trains adapters
too (their checkpoints hold the adapters alone); tensor parallel refuses them at validation.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh

from dpo_lib.io import make_readable_by_all
from dpo_lib.training import checkpoint, clipping
from dpo_lib.training.logps import SequenceLogpModel
from dpo_lib.training.trainer import Trainer, TrainingError

log = logging.getLogger(__name__)


class DistributedTrainer(Trainer):
    """Process-group setup, reductions and DCP checkpoints shared by FSDP and tensor parallel."""

    def init_distributed(self) -> torch.device:
        name = self.config.trainer.name
        if "LOCAL_RANK" not in os.environ:
            raise TrainingError(f"trainer.name: {name} runs under torchrun (one process per device)")
        wanted = self.config.trainer.device
        use_cuda = torch.cuda.is_available() and wanted != "cpu"
        local_rank = int(os.environ["LOCAL_RANK"])
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
        self.mesh = init_device_mesh(device.type, (self.world_size,))
        if self.rank == 0:
            log.info("%s: world size %d, backend %s on %s", name, self.world_size,
                     dist.get_backend(), device.type)  # fmt: skip
        return device

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def save_checkpoint(self, trainer_state: dict[str, Any]) -> Path:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        root = checkpoint.checkpoint_root(self.run_dir)
        final, tmp = root / f"step-{self.step}", root / f".step-{self.step}.tmp"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        try:
            model_state, optim_state = get_state_dict(self.policy, self.optimizer, options=self._state_options())
            model_state = self._saved_part(model_state)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(tmp))
            with open(tmp / f"rng-{self.rank}.pt", "wb") as f:  # a file object: a full disk is OSError(ENOSPC)
                torch.save(checkpoint.rng_state(), f)
            dist.barrier()
            if self.is_main:
                with open(tmp / "scheduler.pt", "wb") as f:
                    torch.save({"scheduler": self.scheduler.state_dict()}, f)
                (tmp / "trainer_state.json").write_text(json.dumps({**trainer_state, "step": self.step}, indent=2))
                (tmp / checkpoint.COMPLETE_MARKER).write_text("")
                if final.exists():
                    checkpoint.discard(final)
                make_readable_by_all(tmp)  # a retry or evaluate may run as another user
                os.replace(tmp, final)
        except BaseException as exc:
            if self.is_main:  # the other processes fail too, or torchrun stops them when this one exits
                shutil.rmtree(tmp, ignore_errors=True)
            checkpoint.raise_if_disk_full(exc, f"checkpoint step-{self.step}", root)
            raise
        if self.is_main:
            checkpoint.prune(self.run_dir, self.config.keep_checkpoints)
        dist.barrier()
        return final

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        options = self._state_options()
        model_state, optim_state = get_state_dict(self.policy, self.optimizer, options=options)
        state = {"model": self._saved_part(model_state), "optim": optim_state}
        dcp.load(state, checkpoint_id=str(path))  # fails on a key the checkpoint lacks
        set_state_dict(self.policy, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                       options=options)  # fmt: skip
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt")["scheduler"])
        rng_file = path / f"rng-{self.rank}.pt"
        if rng_file.exists():  # absent when resuming on a different number of processes
            checkpoint.set_rng_state(torch.load(rng_file, weights_only=False))
        return json.loads((path / "trainer_state.json").read_text())

    def _state_options(self):
        """Of an adapter run, the adapters alone: the frozen base is the model's own files. Loading leaves the
        base as it is (not strict); the checkpoint holds every key asked for, or ``dcp.load`` fails."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        adapters_only = self.lora is not None
        return StateDictOptions(ignore_frozen_params=adapters_only, strict=not adapters_only)

    def _saved_part(self, model_state: dict[str, Any]) -> dict[str, Any]:
        """What a checkpoint holds of the model: all of it, or of an adapter run the trainable weights alone
        (``ignore_frozen_params`` still leaves the second name of a tied weight, a frozen output head)."""
        if self.lora is None:
            return model_state
        trainable = {name for name, param in self.policy.named_parameters() if param.requires_grad}
        return {name: value for name, value in model_state.items() if name in trainable}

    def full_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor] | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trainable_only)
        full = get_model_state_dict(self.policy, options=options)
        if not self.is_main:
            return None
        full = {k.removeprefix("causal_lm."): v for k, v in full.items()}
        # Tied weights (input embeddings = output head) come back as two copies; make them one
        # tensor again so save_pretrained writes them once, as it does for a single-device run.
        first_name: dict[int, str] = {}
        for name, param in self.policy.causal_lm.named_parameters(remove_duplicate=False):
            canonical = first_name.setdefault(id(param), name)
            if canonical != name and canonical in full and name in full:
                full[name] = full[canonical]
        return full

    def save_final(self, dataset_uris: Mapping[str, str] | None = None) -> Path:
        final = super().save_final(dataset_uris)
        dist.barrier()
        return final


class FSDPTrainer(DistributedTrainer):
    """FSDP2: every decoder layer, then the whole model, sharded across all processes.

    Each process takes its own slice of every batch (data parallel); parameters are
    all-gathered per layer for compute in bf16 and gradients reduce-scattered in fp32.
    """

    def init_distributed(self) -> torch.device:
        device = super().init_distributed()
        self.dp_rank, self.dp_size = self.rank, self.world_size
        if self.config.batch_size % self.world_size:
            raise TrainingError(f"batch_size: {self.config.batch_size} pairs do not split evenly over "
                                f"{self.world_size} processes")  # fmt: skip
        return device

    def prepare_model(self, model: SequenceLogpModel, *, trainable: bool) -> torch.nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        model.to(self.device)
        # A trainable model keeps fp32 master weights and computes in bf16; a frozen reference
        # is already bf16 and needs no policy.
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if self.bf16 else None
        kwargs = {"mesh": self.mesh, "reshard_after_forward": self.options.reshard_after_forward}
        if mp is not None and trainable:
            kwargs["mp_policy"] = mp
        for layer in model.causal_lm.get_decoder().layers:
            fully_shard(layer, **kwargs)
        fully_shard(model, **kwargs)
        return model

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        # Sharded (DTensor) gradients: clip_grad_norm_ reduces their norm over all processes;
        # the fused optimizer cannot take a DTensor clipping divisor.
        return torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)


class TensorParallelTrainer(DistributedTrainer):
    """Tensor parallel: attention and MLP projections split across processes, the rest replicated.

    Every process sees the same batch. Query/key/value and gate/up projections are split
    by output features (column-wise), the attention output and down projections by input
    features (row-wise), so each block needs one all-reduce in attention and one in the MLP.
    The plan fits Llama-, Mistral- and Qwen-style blocks; the reference is split the same way.
    """

    LAYER_PLAN = {
        "self_attn.q_proj": "colwise",
        "self_attn.k_proj": "colwise",
        "self_attn.v_proj": "colwise",
        "self_attn.o_proj": "rowwise",
        "mlp.gate_proj": "colwise",
        "mlp.up_proj": "colwise",
        "mlp.down_proj": "rowwise",
    }

    def prepare_model(self, model: SequenceLogpModel, *, trainable: bool) -> torch.nn.Module:
        from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

        config = model.causal_lm.config
        for name in ("num_attention_heads", "num_key_value_heads"):
            if getattr(config, name) % self.world_size:
                raise TrainingError(f"trainer.name: tensor_parallel over {self.world_size} processes needs "
                                    f"{name} ({getattr(config, name)}) divisible by it")  # fmt: skip
        model.to(self.device)
        styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
        for layer in model.causal_lm.get_decoder().layers:
            plan = {path: styles[style]() for path, style in self.LAYER_PLAN.items()}
            parallelize_module(layer, self.mesh, plan)
        return model

    def optimizer_options(self) -> dict[str, Any]:
        # Split (DTensor) and replicated (plain) parameters cannot share one fused or foreach kernel.
        return {"fused": False, "foreach": False}

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Global gradient norm over split (DTensor) and replicated gradients, then clip."""
        from torch.distributed.tensor import DTensor

        sharded = torch.zeros((), device=self.device)
        replicated = torch.zeros((), device=self.device)
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        for grad in grads:
            if isinstance(grad, DTensor):
                sharded += grad.to_local().float().pow(2).sum()
            else:
                replicated += grad.float().pow(2).sum()
        total = (self.all_reduce_sum(sharded) + replicated).sqrt()
        # Applied every step (scaling by 1 is exact) rather than after asking the host whether
        # it is needed: that question would wait for the GPU once per step.
        coefficient = (max_norm / (total + clipping.EPS)).clamp(max=1.0)
        for grad in grads:
            grad.mul_(coefficient)
        return total
