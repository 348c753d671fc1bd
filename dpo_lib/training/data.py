"""Training data: read the configured datasets, split off the held-out pairs, tokenize (cached), batch.

A dataset staged by the pipeline carries its sha256 (``datasets.<name>.sha256``): it was validated
when it was staged, so here the file is checked against that digest and read, not validated again.
Tokenized splits are cached in ``run_dir/cache/`` under a key of everything that shapes them
(the data, the tokenizer's files, the lengths, the seed), so a resumed run or ``evaluate`` does
not read and tokenize the dataset again.
"""

from __future__ import annotations

import hashlib
import io
import logging
import random
from pathlib import Path
from typing import Any

from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.split import split_pairs
from dpo_lib.data.tokenize import (
    TokenizedPair,
    collate_pairs,
    length_bound,
    longest_sequence,
    pack_pairs,
    tokenize_pair,
)
from dpo_lib.io import atomic_write_bytes, file_sha256
from dpo_lib.spec import DatasetConfig, TrainConfig

log = logging.getLogger(__name__)
CACHE_VERSION = 2


class StagedDataChanged(RuntimeError):
    """A staged dataset whose bytes are not those validated at staging."""


def load_pairs(name: str, dataset: DatasetConfig, download_dir: Path) -> list[PreferencePair]:
    """Read one ``datasets.<name>`` entry; a remote URI is downloaded into ``download_dir`` first."""
    from dpo_lib.data.dataset import open_dataset

    path = local_copy(name, dataset, download_dir)
    if dataset.sha256 is not None and (actual := file_sha256(path)) != dataset.sha256:
        raise StagedDataChanged(f"datasets.{name}: {path} has sha256 {actual}, not the {dataset.sha256} it was "
                                "validated with when staged; stage it again")  # fmt: skip
    return open_dataset(path, format=dataset.format, name=name).load()


def local_copy(name: str, dataset: DatasetConfig, download_dir: Path) -> Path:
    """The dataset's local path: itself for a local URI, else a download (kept for the next read)."""
    from dpo_lib.storage import get_storage, parse_uri

    parsed = parse_uri(dataset.uri)
    if parsed.is_local:
        return Path(parsed.path)
    local = download_dir / name / Path(parsed.path).name
    if not local.exists():
        with get_storage(dataset.uri) as storage:
            storage.download(dataset.uri, local)
    return local


def tokenized_splits(config: TrainConfig, tokenizer: Any) -> tuple[list[TokenizedPair], list[TokenizedPair]]:
    """Train and held-out pairs of every configured dataset, tokenized; from the run's cache when it has them."""
    run_dir = Path(config.run_dir)
    sources = {name: local_copy(name, dataset, run_dir / "datasets") for name, dataset in config.datasets.items()}
    path = run_dir / "cache" / f"tokens-{_cache_key(config, tokenizer, sources)}.pt"
    if path.exists():
        import torch

        cached = torch.load(path)
        train, held_out = _unpack(cached["train"]), _unpack(cached["eval"])
        log.info("tokenized pairs from %s (%d train, %d held out)", path, len(train), len(held_out))
        return train, held_out
    train, held_out = [], []
    for name, dataset in config.datasets.items():
        pairs = load_pairs(name, dataset, run_dir / "datasets")
        t, e = split_pairs(pairs, dataset.eval_fraction, config.seed)
        log.info("dataset %s: %d pairs, %d for training, %d held out", name, len(pairs), len(t), len(e))
        train += t
        held_out += e
    tokenized = tokenize_all(train, tokenizer, config), tokenize_all(held_out, tokenizer, config)
    if _is_main_process():
        import torch

        buffer = io.BytesIO()
        torch.save({"train": _pack(tokenized[0]), "eval": _pack(tokenized[1])}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
    return tokenized


def tokenize_all(pairs: list[PreferencePair], tokenizer: Any, config: TrainConfig) -> list[TokenizedPair]:
    return [
        tokenize_pair(
            p,
            tokenizer,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            truncation_mode=config.truncation_mode,
        )
        for p in pairs
    ]


def _cache_key(config: TrainConfig, tokenizer: Any, sources: dict[str, Path]) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    shape = (config.seed, config.max_length, config.max_prompt_length, config.truncation_mode)
    digest.update(repr(shape).encode())
    for name, dataset in sorted(config.datasets.items()):
        data_hash = dataset.sha256 or file_sha256(sources[name])
        digest.update(repr((name, dataset.format, dataset.eval_fraction, data_hash)).encode())
    tokenizer_dir = Path(getattr(tokenizer, "name_or_path", "") or "")
    for file in sorted(tokenizer_dir.glob("*")) if tokenizer_dir.is_dir() else []:
        if file.is_file() and ("token" in file.name or file.name.endswith(".jinja")):
            digest.update(file.name.encode() + file.read_bytes())
    digest.update(repr(sorted(tokenizer.get_vocab().items())[:64]).encode())  # a tokenizer built in memory
    return digest.hexdigest()[:16]


def _pack(pairs: list[TokenizedPair]) -> dict[str, Any]:
    """Pairs as flat int32 tensors and lengths: compact and fast to save and load."""
    import torch

    columns = {}
    for field in ("prompt_ids", "chosen_ids", "rejected_ids"):
        sequences = [getattr(p, field) for p in pairs]
        columns[field] = torch.tensor([t for s in sequences for t in s], dtype=torch.int32)
        columns[field + "_lengths"] = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    for field in ("truncated", "prompt_truncated"):
        columns[field] = torch.tensor([getattr(p, field) for p in pairs], dtype=torch.int64)
    return columns


def _unpack(columns: dict[str, Any]) -> list[TokenizedPair]:
    split = {}
    for field in ("prompt_ids", "chosen_ids", "rejected_ids"):
        lengths = columns[field + "_lengths"].tolist()
        split[field] = [chunk.tolist() for chunk in columns[field].split(lengths)] if lengths else []
    fields = (split["prompt_ids"], split["chosen_ids"], split["rejected_ids"],
              columns["truncated"].tolist(), columns["prompt_truncated"].tolist())  # fmt: skip
    return [TokenizedPair(*values) for values in zip(*fields, strict=True)]


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


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
