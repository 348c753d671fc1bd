"""BasicTrainer: DPO on one device, read top to bottom.

setup():  tokenizer, policy, frozen reference, data, AdamW with linear warmup,
          then resume from the newest complete checkpoint in run_dir if there is one.
train():  for each optimizer step: gradient_accumulation_steps micro-batches, each one
          forward over [chosen; rejected] for the policy (and, without grad, the
          reference), loss, backward; clip, step; log / evaluate / checkpoint on schedule.
          Finally metrics.json (train part) and the policy in run_dir/final/.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from dpo_lib.config import ConfigError
from dpo_lib.io import atomic_write_json
from dpo_lib.losses import compute_loss, needs_reference
from dpo_lib.training import checkpoint
from dpo_lib.training.data import PairBatches, eval_batches, load_splits, tokenize_all
from dpo_lib.training.logps import PairLogps, concatenated_logps
from dpo_lib.training.metrics import MeanTracker, pair_metrics, update_metrics

log = logging.getLogger(__name__)

# Keys that may change between a run and its resumption; any other difference is refused,
# since it would silently mix two experiments in one run_dir.
RESUMABLE_CHANGES = {"max_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                     "eval_batch_size", "n_eval_examples", "datasets", "trainer"}  # fmt: skip


def load_model(name_or_path: str, device: torch.device) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch.float32)
    return model.to(device)


def load_tokenizer(cfg: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        cfg["model"].get("tokenizer_name_or_path") or cfg["model"]["name_or_path"]
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def resolve_device(trainer_cfg: dict[str, Any]) -> torch.device:
    wanted = trainer_cfg.get("device", "auto")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("trainer.device: cuda was asked for but no GPU is visible")
    return torch.device(wanted)


def autocast_context(trainer_cfg: dict[str, Any], device: torch.device) -> Any:
    """bf16 autocast over fp32 master weights on GPU (precision=auto|bf16); plain fp32 otherwise."""
    precision = trainer_cfg.get("precision", "auto")
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def warmup_then_constant(warmup_steps: int):
    return lambda step: min(1.0, (step + 1) / (warmup_steps + 1))


class BasicTrainer:
    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg["run_dir"])
        self.loss_cfg = cfg["loss"]
        self.device = resolve_device(cfg["trainer"])

    # ---- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_resumable_config()
        torch.manual_seed(cfg["seed"])

        self._load_models(cfg["model"]["name_or_path"])
        self._load_data()

        self.optimizer = torch.optim.AdamW(
            self.policy.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=self.device.type == "cuda"
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_then_constant(cfg["warmup_steps"]))
        self.step = 0
        latest = checkpoint.latest_checkpoint(self.run_dir)
        if latest is not None:
            state = checkpoint.load_checkpoint(latest, self.policy, self.optimizer, self.scheduler)
            self.step = state["step"]
            log.info("resuming from checkpoint %s at step %d (data position %s)", latest, self.step, state["data"])

    def setup_for_evaluation(self, policy_path: str | Path) -> None:
        """Models and held-out data only: no optimizer, no checkpoint."""
        torch.manual_seed(self.cfg["seed"])
        self._load_models(str(policy_path))
        self._load_data()

    def _load_models(self, policy_path: str) -> None:
        self.tokenizer = load_tokenizer(self.cfg)
        self.policy = load_model(policy_path, self.device)
        self.policy.train()
        self.reference = None
        if needs_reference(self.loss_cfg["name"]):
            self.reference = load_model(self.cfg["model"]["name_or_path"], self.device).eval().requires_grad_(False)

    def _load_data(self) -> None:
        cfg = self.cfg
        train_pairs, held_out = load_splits(cfg)
        if cfg["n_eval_examples"]:
            held_out = held_out[: cfg["n_eval_examples"]]
        self.eval_pairs = tokenize_all(held_out, self.tokenizer, cfg)
        self.batches = PairBatches(
            tokenize_all(train_pairs, self.tokenizer, cfg), cfg["batch_size"], cfg["seed"], self.tokenizer.pad_token_id
        )

    def _check_resumable_config(self) -> None:
        saved_path = self.run_dir / "config.json"
        if saved_path.exists():
            import json

            saved = json.loads(saved_path.read_text())
            changed = sorted(k for k in set(saved) | set(self.cfg) if saved.get(k) != self.cfg.get(k))
            refused = [k for k in changed if k not in RESUMABLE_CHANGES]
            if refused:
                raise ConfigError(
                    f"run_dir {self.run_dir} belongs to a run with a different config "
                    f"(changed: {', '.join(refused)}); use a new run_dir or exp_name"
                )
        atomic_write_json(saved_path, self.cfg)

    # ---- one batch ---------------------------------------------------------------------------
    def batch_loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict, PairLogps]:
        batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with autocast_context(self.cfg["trainer"], self.device):
            policy = concatenated_logps(model, batch)
            ref = None
            if self.reference is not None:
                with torch.no_grad():
                    ref = concatenated_logps(self.reference, batch)
        out = compute_loss(
            self.loss_cfg,
            policy.chosen,
            policy.rejected,
            ref.chosen if ref else None,
            ref.rejected if ref else None,
            policy.chosen_tokens,
        )
        return out.losses.mean(), pair_metrics(out, policy), policy

    # ---- training loop -----------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        cfg = self.cfg
        accum, max_steps = cfg["gradient_accumulation_steps"], cfg["max_steps"]
        if self.step >= max_steps:
            log.info("run already at step %d of %d; nothing to train", self.step, max_steps)
        window, window_tokens, window_time = MeanTracker(), 0, 0.0
        step_times: list[float] = []
        train_metrics: dict[str, float] = {}
        while self.step < max_steps:
            started = time.perf_counter()
            for micro in range(accum):
                batch = self.batches.get(self.step * accum + micro)
                loss, values, _ = self.batch_loss(self.policy, batch)
                (loss / accum).backward()
                window.add(values)
                window_tokens += batch["num_tokens"]
            max_norm = cfg["max_grad_norm"] or math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), max_norm)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - started
            window_time += elapsed
            step_times.append(elapsed)

            if self.step % cfg["log_every"] == 0 or self.step == max_steps:
                train_metrics = {
                    **window.means(),
                    "grad_norm": float(grad_norm),
                    "lr": lr,
                    "tokens_per_s": window_tokens / max(window_time, 1e-9),
                }
                recent = step_times[-cfg["log_every"] :]
                eta = (max_steps - self.step) * sum(recent) / len(recent)
                log.info(
                    "step %d/%d loss %.4f reward_acc %.3f margin %.3f grad_norm %.3f lr %.2e tokens/s %.0f ETA %s",
                    self.step, max_steps, train_metrics["loss"], train_metrics["rewards/accuracies"],
                    train_metrics["rewards/margins"], train_metrics["grad_norm"], lr,
                    train_metrics["tokens_per_s"], _format_duration(eta),
                )  # fmt: skip
                update_metrics(self.run_dir, train={**train_metrics, "step": self.step})
                window, window_tokens, window_time = MeanTracker(), 0, 0.0

            if cfg["eval_every"] and self.step % cfg["eval_every"] == 0 and self.eval_pairs:
                eval_metrics = self.evaluate(self.policy)
                log.info("eval at step %d: %s", self.step, _format_metrics(eval_metrics))
                update_metrics(self.run_dir, eval={**eval_metrics, "step": self.step})

            if cfg["checkpoint_every"] and (self.step % cfg["checkpoint_every"] == 0 or self.step == max_steps):
                path = checkpoint.save_checkpoint(
                    self.run_dir,
                    self.step,
                    self.policy,
                    self.optimizer,
                    self.scheduler,
                    {"data": self.batches.position(self.step * accum)},
                    keep=cfg["keep_checkpoints"],
                )
                log.info("saved checkpoint %s", path)

        self.save_final()
        return train_metrics

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Mean metrics of ``model`` over the held-out pairs (against the reference)."""
        was_training = model.training
        model.eval()
        tracker = MeanTracker()
        for batch in eval_batches(self.eval_pairs, self.cfg["eval_batch_size"], self.tokenizer.pad_token_id):
            _, values, policy = self.batch_loss(model, batch)
            tracker.add({**values, "logps/accuracies": (policy.chosen > policy.rejected).float()})
        model.train(was_training)
        return tracker.means()

    def save_final(self) -> Path:
        """The trained policy in Hugging Face format, loadable with ``from_pretrained``."""
        import shutil
        import tempfile

        final = self.run_dir / "final"
        tmp = Path(tempfile.mkdtemp(prefix=".final.", dir=self.run_dir))
        try:
            self.policy.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            tmp.chmod(0o755)  # mkdtemp makes it private; the model is read by the evaluate/upload steps
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("saved the trained policy to %s", final)
        return final


def _format_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_metrics(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
