"""Reference log-probabilities computed once, before training, and cached on disk.

The reference model is frozen, so its log-probs of each pair never change: computing
them up front removes the reference forward from every training step and frees the
reference model's memory. The cache file is keyed by a hash of the tokenized pairs
and of the reference model's files, so a changed dataset or model never reuses it,
and a resumed run does not recompute it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dpo_lib.data.tokenize import TokenizedPair
from dpo_lib.io import atomic_write_bytes
from dpo_lib.training.data import PairBatches
from dpo_lib.training.logps import PairLogps

if TYPE_CHECKING:
    from dpo_lib.training.trainer import Trainer

log = logging.getLogger(__name__)


class ReferenceLogps:
    """``(chosen, rejected)`` reference log-probs per pair index, for training and held-out pairs."""

    def __init__(self, train: torch.Tensor, eval: torch.Tensor | None) -> None:
        self.values = train  # (N, 2) float32
        self.eval = ReferenceLogps(eval, None) if eval is not None else None

    def lookup(self, pair_indices: torch.Tensor) -> PairLogps:
        rows = self.values.to(pair_indices.device)[pair_indices]
        return PairLogps(rows[:, 0], rows[:, 1], None, None)

    @classmethod
    def compute_or_load(cls, trainer: Trainer, reference: torch.nn.Module) -> ReferenceLogps:
        key = cache_key(trainer.batches.pairs + trainer.eval_pairs, trainer.config.model.name_or_path)
        path = trainer.run_dir / "cache" / f"ref_logps-{key}.pt"
        if path.exists():
            saved = torch.load(path)
            log.info("loaded reference log-probs from %s", path)
            return cls(saved["train"], saved["eval"])
        started = time.perf_counter()
        train = _compute(trainer, reference, trainer.batches.pairs)
        held_out = _compute(trainer, reference, trainer.eval_pairs) if trainer.eval_pairs else None
        if trainer.is_main:
            buffer = io.BytesIO()
            torch.save({"train": train, "eval": held_out}, buffer)
            atomic_write_bytes(path, buffer.getvalue())
        elapsed = time.perf_counter() - started
        log.info("computed reference log-probs of %d pairs in %.1f s (%s)", len(trainer.batches.pairs), elapsed, path)
        return cls(train, held_out)


@torch.no_grad()
def _compute(trainer: Trainer, reference: torch.nn.Module, pairs: list[TokenizedPair]) -> torch.Tensor:
    """Every process computes its slice of each batch; a sum across processes assembles the table."""
    batches = PairBatches(pairs, trainer.config.eval_batch_size, 0, trainer.batches.pad_token_id,
                          packing=trainer.batches.packing, shuffle=False)  # fmt: skip
    table = torch.zeros(len(pairs), 2, dtype=torch.float32, device=trainer.device)
    for index in range(batches.batches_per_epoch_ceil):
        batch = batches.get(index, trainer.dp_rank, trainer.dp_size)
        batch = {k: v.to(trainer.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        with trainer.autocast():
            logps = reference(batch)
        if batch["counted"]:
            table[batch["pair_indices"], 0] = logps.chosen.float()
            table[batch["pair_indices"], 1] = logps.rejected.float()
    if trainer.dp_size > 1:
        table = trainer.all_reduce_sum(table)
    return table.cpu()


def cache_key(pairs: list[TokenizedPair], model_name_or_path: str) -> str:
    digest = hashlib.sha256()
    for pair in pairs:
        for ids in (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids):
            digest.update(len(ids).to_bytes(4, "little"))
            digest.update(torch.tensor(ids, dtype=torch.int32).numpy().tobytes())
    model_dir = Path(model_name_or_path)
    files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")) + [model_dir / "config.json"]
    for file in files:
        if file.exists():
            digest.update(file.name.encode())
            with open(file, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
    return digest.hexdigest()[:16]
