"""The DPO training loop, read top to bottom; strategies (basic, FSDP, tensor parallel) override hooks.

``setup()`` loads the tokenizer, policy, reference (or its cached log-probs), data, loss and optimizer,
and resumes from the newest checkpoint; with ``adapter: lora`` the reference is the policy with its
adapters off (``adapters.py``). ``train()`` runs the optimizer steps and logs, evaluates and
checkpoints on schedule. ``save_final()`` writes the policy, its tokenizer and a model card to
``run_dir/final/``. Strategies override ``init_distributed``, ``prepare_model``, ``all_reduce_sum``,
``clip_grad_norm``, ``save_checkpoint``, ``load_checkpoint`` and ``full_state_dict``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from dpo_lib.data.tokenize import TokenizedPair
from dpo_lib.data.truncation import truncation_of
from dpo_lib.io import atomic_write_json, make_readable_by_all
from dpo_lib.losses import build_loss
from dpo_lib.models.tokenizer import load_tokenizer
from dpo_lib.spec import TrainConfig, TrainerConfig
from dpo_lib.tracking import NULL_TRACKER
from dpo_lib.training import adapters, attention, checkpoint, model_card
from dpo_lib.training.clipping import clip_gradients
from dpo_lib.training.data import PairBatches, tokenized_splits
from dpo_lib.training.logps import PairLogps, SequenceLogpModel
from dpo_lib.training.metrics import MeanTracker, pair_metrics, update_metrics
from dpo_lib.training.reference import ReferenceLogps

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """A run that cannot start or go on as configured; the message says why and what to change."""


# Keys that may change between a run and its resumption; any other difference is refused,
# since it would silently mix two experiments in one run_dir.
RESUMABLE_CHANGES = {"max_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                     "eval_batch_size", "n_eval_examples", "datasets", "trainer"}  # fmt: skip


def load_causal_lm(
    name_or_path: str,
    options: TrainerConfig,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
):
    """``from_pretrained``; a directory holding only ``config.json`` gives a seeded random init (benchmarks)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    attn = "sdpa" if options.attn_implementation == "auto" else options.attn_implementation
    if attn == attention.NAME:
        if options.packing is not True:
            raise TrainingError("trainer.attn_implementation: varlen needs trainer.packing: true")
        attention.register()
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").exists() and not any(path.glob("*.safetensors")):
        config = AutoConfig.from_pretrained(path)
        with torch.device(device or "cpu"):  # initialise where it will run: a 1B model inits slowly on a CPU
            return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return AutoModelForCausalLM.from_pretrained(name_or_path, dtype=dtype, attn_implementation=attn)


def resolve_device(options: TrainerConfig) -> torch.device:
    wanted = options.device
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise TrainingError("trainer.device: cuda was asked for but no GPU is visible")
    return torch.device(wanted)


def resolve_auto(options: TrainerConfig, device: torch.device) -> TrainerConfig:
    """Settle the ``auto`` feature switches for ``device``: the fast path on GPUs, the simple one on CPUs.

    Packing only pays with an attention kernel that computes nothing across sequences:
    FlashAttention on the packer's sequence boundaries (``varlen``), or flex attention's block
    mask where this PyTorch lacks the former; on a CPU the dense packed mask costs more than
    padding does.
    """
    on_gpu = device.type == "cuda"
    packing = on_gpu if options.packing == "auto" else options.packing
    compile_layers = on_gpu if options.compile == "auto" else options.compile
    compile_head = compile_layers if options.compile_logp_head == "auto" else options.compile_logp_head
    attn = options.attn_implementation
    if attn == "auto":
        packed_kernel = attention.NAME if attention.available_on_gpu() else "flex_attention"
        attn = packed_kernel if on_gpu and packing else "sdpa"
    return options.model_copy(
        update={"packing": packing, "compile": compile_layers, "compile_logp_head": compile_head,
                "attn_implementation": attn}
    )  # fmt: skip


def uses_bf16(options: TrainerConfig, device: torch.device) -> bool:
    return options.precision == "bf16" or (options.precision == "auto" and device.type == "cuda")


def warmup_then_constant(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / (warmup_steps + 1))


class Trainer:
    """The loop. Subclasses decide how models are placed and how state is saved."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir)
        self.rank, self.world_size, self.dp_rank, self.dp_size = 0, 1, 0, 1
        self.device = self.init_distributed()
        self.options = resolve_auto(config.trainer, self.device)  # the trainer config, "auto" settled
        self.bf16 = uses_bf16(self.options, self.device)
        self.loss = build_loss(config.loss)
        self.lora = config.adapter if config.adapter.name == "lora" else None
        self.policy_has_adapters = False  # then the reference is the policy with its adapters off
        self.tracker = NULL_TRACKER  # history.jsonl and MLflow: rank 0 of a tracked run (recipe.train)

    # ---- strategy hooks (single device) --------------------------------------------------------
    def init_distributed(self) -> torch.device:
        return resolve_device(self.config.trainer)

    def prepare_model(self, model: SequenceLogpModel, *, trainable: bool) -> torch.nn.Module:
        return model.to(self.device)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def optimizer_options(self) -> dict[str, Any]:
        return {"fused": self.device.type == "cuda"}  # one kernel for the whole update

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        return clip_gradients(grads, max_norm, self.optimizer)

    def save_checkpoint(self, trainer_state: dict[str, Any]) -> Path:
        return checkpoint.save_checkpoint(self.run_dir, self.step, self.policy, self.optimizer, self.scheduler,
                                          trainer_state, keep=self.config.keep_checkpoints,
                                          trainable_only=self.lora is not None)  # fmt: skip

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        return checkpoint.load_checkpoint(path, self.policy, self.optimizer, self.scheduler,
                                          trainable_only=self.lora is not None)  # fmt: skip

    def full_state_dict(self, trainable_only: bool = False) -> dict[str, torch.Tensor] | None:
        """The policy's full weights (``trainable_only``: its adapters) on the main process, None elsewhere,
        named as the policy's causal LM names them, for ``save_pretrained``."""
        return None  # the unwrapped model's own state dict is used

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- setup ---------------------------------------------------------------------------------
    def setup(self, train_pairs: list[TokenizedPair] | None = None, eval_pairs: list[TokenizedPair] | None = None):
        """Load everything; ``train_pairs``/``eval_pairs`` skip the datasets (the benchmark uses this)."""
        config = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._check_resumable_config()
            for stale in checkpoint.remove_stale_temporaries(self.run_dir):
                log.info("removed %s, left by an interrupted write", stale)
        torch.manual_seed(config.seed)
        self.tokenizer = load_tokenizer(config.model) if train_pairs is None else None
        self._load_data(train_pairs, eval_pairs, record_truncation=True)
        self.policy = self.build_model(config.model.name_or_path, trainable=True)
        self.policy_has_adapters = self.lora is not None
        self.reference: torch.nn.Module | None = None
        self.reference_logps: ReferenceLogps | None = None
        if self.loss.needs_reference:
            reference = self.build_reference()
            if self.options.precompute_ref_logps:
                self.reference_logps = ReferenceLogps.compute_or_load(self, reference)
                del reference
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            else:
                self.reference = reference

        trainable = [p for p in self.policy.parameters() if p.requires_grad]  # adapters only, in an adapter run
        self.optimizer = torch.optim.AdamW(
            trainable, lr=config.lr, weight_decay=config.weight_decay, **self.optimizer_options()
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_constant(config.warmup_steps))
        self.step = 0
        latest = checkpoint.latest_checkpoint(self.run_dir)
        if latest is not None:
            state = self.load_checkpoint(latest)
            self.step = state["step"]
            if self.is_main:
                log.info("resuming from checkpoint %s at step %d (data position %s)", latest, self.step,
                         state["data"])  # fmt: skip

    def setup_for_evaluation(self, policy_path: str | Path) -> None:
        """Models and held-out data only: no optimizer, no checkpoint."""
        torch.manual_seed(self.config.seed)
        self.tokenizer = load_tokenizer(self.config.model)
        self._load_data(None, None)
        self.policy_has_adapters = adapters.is_adapter_folder(policy_path)
        if self.policy_has_adapters:  # the base, with the adapters from policy_path
            self.policy = self.build_model(self.config.model.name_or_path, trainable=False, adapter_dir=policy_path)
        else:
            self.policy = self.build_model(str(policy_path), trainable=False)
        self.reference_logps = None
        self.reference = self.build_reference() if self.loss.needs_reference else None

    def build_reference(self) -> torch.nn.Module:
        """The reference: the policy with its adapters off when it has adapters (one copy of the base
        weights), else the base model loaded again, frozen."""
        if self.policy_has_adapters:
            return adapters.AdaptersOff(self.policy)
        return self.build_model(self.config.model.name_or_path, trainable=False)

    def build_model(
        self, name_or_path: str, *, trainable: bool, adapter_dir: str | Path | None = None
    ) -> torch.nn.Module:
        """The causal LM at ``name_or_path`` as a :class:`SequenceLogpModel`, placed by the strategy.

        ``trainable``: the policy, in train mode; with ``adapter: lora`` only its new adapters train.
        Otherwise frozen, in eval mode. ``adapter_dir``: frozen adapters from that folder on top.
        """
        with_new_adapters = trainable and self.lora is not None
        # Trainable weights stay fp32 (the optimizer's master copy) under bf16 autocast. Frozen weights
        # only run forwards and have no optimizer state, so when training in bf16 they are held in bf16
        # outright: a reference, and the base under adapters (peft keeps the adapters themselves fp32).
        frozen_base = not trainable or with_new_adapters
        dtype = torch.bfloat16 if self.bf16 and frozen_base else torch.float32
        torch.manual_seed(self.config.seed)  # a random init (benchmarks) is the same for policy and reference
        causal_lm = load_causal_lm(name_or_path, self.options, dtype, self.device)
        if trainable and self.options.activation_checkpointing:
            causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if with_new_adapters:
            try:
                causal_lm = adapters.add_lora(causal_lm, self.lora)
            except ValueError as exc:
                raise TrainingError(f"adapter.target_modules: {exc}") from None
        elif adapter_dir is not None:
            causal_lm = adapters.load_lora(causal_lm, adapter_dir)
        causal_lm.train(trainable)
        if not trainable:
            causal_lm.requires_grad_(False)
        model = SequenceLogpModel(causal_lm, self.options.logp_chunk_size, compile_head=self.options.compile_logp_head)
        model = self.prepare_model(model, trainable=trainable)
        if self.options.compile:
            for layer in causal_lm.get_decoder().layers:
                # Regional compilation: fast to compile, works under FSDP. Automatic dynamic shapes
                # make only the dimensions that do change (sequence length) symbolic.
                layer.compile()
        return model

    def _load_data(self, train_pairs: list[TokenizedPair] | None, eval_pairs: list[TokenizedPair] | None,
                   record_truncation: bool = False) -> None:  # fmt: skip
        """The batches; without given pairs, the datasets tokenized (and ``record_truncation``: what truncation
        cut, in metrics.json's ``data`` part)."""
        config = self.config
        if train_pairs is None:
            train_pairs, eval_pairs = tokenized_splits(config, self.tokenizer)
            if config.n_eval_examples:
                eval_pairs = eval_pairs[: config.n_eval_examples]
            if self.is_main:
                cut = truncation_of(train_pairs + eval_pairs, config)
                if cut.truncated_pairs:
                    log.warning("%s; raise max_length (and max_prompt_length) to keep more", cut.summary())
                if record_truncation:
                    update_metrics(self.run_dir, data={"truncation": cut.model_dump(mode="json")})
        pad_id = self.tokenizer.pad_token_id if self.tokenizer is not None else 0
        packing = bool(self.options.packing)
        self.batches = PairBatches(train_pairs, config.batch_size, config.seed, pad_id, packing=packing)
        self.eval_pairs = eval_pairs or []
        self.eval_batches = PairBatches(self.eval_pairs, config.eval_batch_size, config.seed, pad_id,
                                        packing=packing, shuffle=False) if self.eval_pairs else None  # fmt: skip

    def _check_resumable_config(self) -> None:
        saved_path = self.run_dir / "config.json"
        current = self.config.model_dump(mode="json")
        if saved_path.exists():
            saved = json.loads(saved_path.read_text())
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            refused = [k for k in changed if k not in RESUMABLE_CHANGES]
            if refused:
                raise TrainingError(
                    f"run_dir {self.run_dir} belongs to a run with a different config "
                    f"(changed: {', '.join(refused)}); use a new run_dir or exp_name"
                )
        atomic_write_json(saved_path, current)

    # ---- one batch -----------------------------------------------------------------------------
    def autocast(self) -> Any:
        if self.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def batch_loss(self, model: torch.nn.Module, batch: dict[str, Any], reference_logps: ReferenceLogps | None = None):
        """Mean loss of one micro-batch, per-pair metric values, and the policy's log-probs."""
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with self.autocast():
            policy = model(batch)
            ref: PairLogps | None = None
            if reference_logps is not None:
                ref = reference_logps.lookup(batch["pair_indices"])
            elif self.reference is not None:
                with torch.no_grad():
                    ref = self.reference(batch)
        out = self.loss(policy, ref)
        return out.losses.mean(), pair_metrics(out, policy), policy

    # ---- training loop -------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        config = self.config
        accum, max_steps = config.gradient_accumulation_steps, config.max_steps
        if self.step >= max_steps:
            log.info("run already at step %d of %d; nothing to train", self.step, max_steps)
        window, window_tokens, window_time = MeanTracker(), 0, 0.0
        step_times: list[float] = []
        train_metrics: dict[str, float] = {}
        while self.step < max_steps:
            started = time.perf_counter()
            grad_norm, lr, tokens = self.train_step(window)
            window_tokens += tokens
            logging_now = self.step % config.log_every == 0 or self.step == max_steps
            if logging_now:
                # Steps only queue GPU work; waiting for it here makes the window's time true.
                self.synchronize()
            elapsed = time.perf_counter() - started
            window_time += elapsed
            step_times.append(elapsed)

            if logging_now:
                means = self.reduce_means(window)
                all_tokens = float(self.all_reduce_sum(torch.tensor(float(window_tokens), device=self.device)))
                train_metrics = {**means, "grad_norm": float(grad_norm), "lr": lr,
                                 "tokens_per_s": all_tokens / max(window_time, 1e-9)}  # fmt: skip
                recent = step_times[-config.log_every :]
                eta = (max_steps - self.step) * sum(recent) / len(recent)  # true as a window's sum (it ends synced)
                if self.is_main:
                    log.info(
                        "step %d/%d loss %.4f reward_acc %.3f margin %.3f grad_norm %.3f lr %.2e tokens/s %.0f ETA %s",
                        self.step, max_steps, train_metrics["loss"], train_metrics["rewards/accuracies"],
                        train_metrics["rewards/margins"], train_metrics["grad_norm"], lr,
                        train_metrics["tokens_per_s"], _format_duration(eta),
                    )  # fmt: skip
                    update_metrics(self.run_dir, train={**train_metrics, "step": self.step})
                    self.tracker.log("train", self.step, train_metrics)
                window, window_tokens, window_time = MeanTracker(), 0, 0.0

            if config.eval_every and self.step % config.eval_every == 0 and self.eval_pairs:
                eval_metrics = self.evaluate(self.policy)
                if self.is_main:
                    log.info("eval at step %d: %s", self.step, _format_metrics(eval_metrics))
                    update_metrics(self.run_dir, eval={**eval_metrics, "step": self.step})
                    self.tracker.log("eval", self.step, eval_metrics)

            if config.checkpoint_every and (self.step % config.checkpoint_every == 0 or self.step == max_steps):
                path = self.save_checkpoint({"data": self.batches.position(self.step * accum)})
                if self.is_main:
                    log.info("saved checkpoint %s", path)
        return train_metrics

    def train_step(self, tracker: MeanTracker) -> tuple[torch.Tensor, float, int]:
        """One optimizer step over gradient_accumulation_steps micro-batches.

        Adds per-pair metric values to ``tracker``; returns the gradient norm (before
        clipping; a device tensor, so reading it waits for the step), the learning rate
        used, and this process's real tokens. Nothing here waits for the GPU: the next
        batch is built while this step's kernels still run.
        """
        accum, tokens = self.config.gradient_accumulation_steps, 0
        for micro in range(accum):
            batch = self.batches.get(self.step * accum + micro, self.dp_rank, self.dp_size)
            loss, values, _ = self.batch_loss(self.policy, batch, self.reference_logps)
            (loss / accum).backward()
            tracker.add(values)
            tokens += batch["num_tokens"]
        grad_norm = self.clip_grad_norm(self.config.max_grad_norm or math.inf)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return grad_norm, lr, tokens

    def synchronize(self) -> None:
        """Wait for the device's queued work (a no-op on CPUs)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reduce_means(self, tracker: MeanTracker) -> dict[str, float]:
        """Means over every process's pairs."""
        names, totals = tracker.totals(self.device)
        totals = self.all_reduce_sum(totals)
        count = max(float(totals[-1]), 1.0)
        return {name: float(totals[i]) / count for i, name in enumerate(names)}

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Mean metrics of ``model`` over the held-out pairs (against the reference)."""
        was_training = model.training
        model.eval()
        tracker = MeanTracker()
        for index in range(self.eval_batches.batches_per_epoch_ceil):
            batch = self.eval_batches.get(index, self.dp_rank, self.dp_size)
            _, values, policy = self.batch_loss(model, batch, self.reference_logps and self.reference_logps.eval)
            if batch["counted"]:
                tracker.add({**values, "logps/accuracies": (policy.chosen > policy.rejected).float()})
        model.train(was_training)
        return self.reduce_means(tracker)

    def save_final(self, dataset_uris: Mapping[str, str] | None = None) -> Path:
        """The trained policy in Hugging Face format, its tokenizer and a model card (README.md), in final/.

        A full model loads with ``AutoModelForCausalLM.from_pretrained``; an adapter run writes peft's
        adapter folder (``AutoPeftModelForCausalLM.from_pretrained`` loads it over the base), or with
        ``adapter.merge`` the merged full model. ``dataset_uris``: where the datasets came from, for the
        card, when the config names staged copies.
        """
        final = self.run_dir / "final"
        lora = self.lora
        state_dict = self.full_state_dict(trainable_only=lora is not None and not lora.merge)
        if not self.is_main:
            return final
        causal_lm = self.policy.causal_lm if hasattr(self.policy, "causal_lm") else self.policy
        tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=self.run_dir))
        try:
            if lora is not None and lora.merge:
                adapters.save_merged(causal_lm, tmp, lora, state_dict)
            else:  # peft's save_pretrained writes the adapters alone
                causal_lm.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            model_card.write(tmp, self.config, step=self.step, dataset_uris=dataset_uris)
            # mkdtemp and safetensors make them private; evaluate or an upload may run as another user
            make_readable_by_all(tmp)
            if final.exists():  # out of the way by a rename: a kill now cannot leave a half-deleted final/
                checkpoint.discard(final)
            tmp.rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("saved the trained policy to %s", final)
        return final


class BasicTrainer(Trainer):
    """One process, one device."""


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
