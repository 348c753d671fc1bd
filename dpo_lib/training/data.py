"""Training data: load the configured datasets, split off the held-out pairs, batch deterministically."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.tokenize import TokenizedPair, collate_pairs, tokenize_pair

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
    """Batch ``i`` of training is a pure function of (seed, i): each epoch is a seeded shuffle.

    That is what makes resuming exact: the data position of a checkpoint is just
    the number of micro-batches consumed, and no iterator state needs saving.
    """

    def __init__(self, pairs: list[TokenizedPair], batch_size: int, seed: int, pad_token_id: int) -> None:
        if not pairs:
            raise ValueError("no training pairs")
        self.pairs = pairs
        self.batch_size = min(batch_size, len(pairs))
        self.batches_per_epoch = len(pairs) // self.batch_size  # the ragged tail is dropped each epoch
        self.seed = seed
        self.pad_token_id = pad_token_id
        self._epoch, self._order = -1, []

    def position(self, index: int) -> dict[str, int]:
        return {"micro_batch": index, "epoch": index // self.batches_per_epoch}

    def get(self, index: int) -> dict[str, Any]:
        epoch, within = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:
            self._order = list(range(len(self.pairs)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(self._order)
            self._epoch = epoch
        ids = self._order[within * self.batch_size : (within + 1) * self.batch_size]
        return collate_pairs([self.pairs[i] for i in ids], self.pad_token_id)


def eval_batches(pairs: list[TokenizedPair], batch_size: int, pad_token_id: int) -> Iterator[dict[str, Any]]:
    for start in range(0, len(pairs), batch_size):
        yield collate_pairs(pairs[start : start + batch_size], pad_token_id)
