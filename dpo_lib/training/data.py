"""Training data: load the configured datasets, split off the held-out pairs, batch deterministically."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.tokenize import (
    TokenizedPair,
    collate_pairs,
    length_bound,
    longest_sequence,
    pack_pairs,
    tokenize_pair,
)

log = logging.getLogger(__name__)


def load_pairs(name: str, dataset_cfg: dict[str, Any], download_dir: Path) -> list[PreferencePair]:
    """Read one ``datasets.<name>`` entry. Remote URIs are downloaded into ``download_dir`` first."""
    from dpo_lib.data.dataset import open_dataset
    from dpo_lib.storage import get_storage

    uri = dataset_cfg["uri"]
    if "://" in uri and not uri.startswith("file://"):
        local = download_dir / name / uri.rsplit("/", 1)[-1]
        if not local.exists():
            get_storage(uri).download(uri, local)
        uri = str(local)
    return open_dataset(uri.removeprefix("file://"), format=dataset_cfg.get("format")).load()


def split_pairs(
    pairs: list[PreferencePair], eval_fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """A seeded shuffle, then the first ``eval_fraction`` of it is held out. Same seed, same split."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = int(round(len(pairs) * eval_fraction))
    if eval_fraction > 0 and len(pairs) > 1:
        n_eval = min(max(n_eval, 1), len(pairs) - 1)
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def load_splits(cfg: dict[str, Any]) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Train and held-out pairs of every configured dataset, concatenated."""
    train, held_out = [], []
    for name, dataset_cfg in cfg["datasets"].items():
        pairs = load_pairs(name, dataset_cfg, Path(cfg["run_dir"]) / "datasets")
        t, e = split_pairs(pairs, dataset_cfg.get("eval_fraction", 0.0), cfg["seed"])
        log.info("dataset %s: %d pairs, %d for training, %d held out", name, len(pairs), len(t), len(e))
        train += t
        held_out += e
    return train, held_out


def tokenize_all(pairs: list[PreferencePair], tokenizer: Any, cfg: dict[str, Any]) -> list[TokenizedPair]:
    return [
        tokenize_pair(
            p,
            tokenizer,
            max_length=cfg["max_length"],
            max_prompt_length=cfg["max_prompt_length"],
            truncation_mode=cfg["truncation_mode"],
        )
        for p in pairs
    ]


class PairBatches:
    """Batch ``i`` is a pure function of (seed, i): each epoch is a seeded shuffle of the pairs.

    That is what makes resuming exact: the data position of a checkpoint is just the number
    of micro-batches consumed, and no iterator state needs saving. Under data parallelism
    each process takes its own contiguous slice of every batch.
    """

    def __init__(
        self,
        pairs: list[TokenizedPair],
        batch_size: int,
        seed: int,
        pad_token_id: int,
        *,
        packing: bool = False,
        shuffle: bool = True,
    ) -> None:
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs = pairs
        self.batch_size = min(batch_size, len(pairs))
        self.batches_per_epoch = len(pairs) // self.batch_size  # training drops the ragged tail each epoch
        self.batches_per_epoch_ceil = -(-len(pairs) // self.batch_size)  # evaluation keeps it
        self.seed = seed
        self.pad_token_id = pad_token_id
        self.packing = packing
        self.shuffle = shuffle
        self._epoch, self._order = -1, list(range(len(pairs)))
        # One bound on sequence length for every packed batch, so compiled attention sees one value.
        self._longest = length_bound(longest_sequence(pairs))

    def position(self, index: int) -> dict[str, int]:
        return {"micro_batch": index, "epoch": index // self.batches_per_epoch}

    def indices(self, index: int) -> list[int]:
        """Pair indices of micro-batch ``index`` (the last, ragged one only when not shuffling)."""
        if not self.shuffle:
            return self._order[index * self.batch_size : (index + 1) * self.batch_size]
        epoch, within = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:
            self._order = list(range(len(self.pairs)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
            self._epoch = epoch
        return self._order[within * self.batch_size : (within + 1) * self.batch_size]

    def get(self, index: int, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
        import torch

        ids = self.indices(index)
        per_rank = -(-len(ids) // world_size)
        mine = ids[rank * per_rank : (rank + 1) * per_rank]
        counted = bool(mine)
        if not mine:  # a ragged evaluation batch with fewer pairs than processes: compute, don't count
            mine = ids[:1]
        chosen = [self.pairs[i] for i in mine]
        if self.packing:
            batch = pack_pairs(chosen, self.pad_token_id, max_seq_len=self._longest)
        else:
            batch = collate_pairs(chosen, self.pad_token_id)
        batch["pair_indices"] = torch.tensor(mine, dtype=torch.long)
        batch["counted"] = counted
        return batch
