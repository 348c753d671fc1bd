"""The held-out split: a seeded shuffle, then the first ``eval_fraction`` of the pairs. Same seed, same split."""

from __future__ import annotations

import random
from typing import TypeVar

T = TypeVar("T")


def held_out_count(n_pairs: int, eval_fraction: float) -> int:
    """Pairs held out of ``n_pairs``: at least one and not all, whenever ``eval_fraction`` > 0 and there are two."""
    n_eval = int(round(n_pairs * eval_fraction))
    if eval_fraction > 0 and n_pairs > 1:
        n_eval = min(max(n_eval, 1), n_pairs - 1)
    return n_eval


def split_pairs(pairs: list[T], eval_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """``(train, held_out)``: the pairs in a seeded shuffle, the first ``held_out_count`` held out."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    n_eval = held_out_count(len(pairs), eval_fraction)
    return [pairs[i] for i in order[n_eval:]], [pairs[i] for i in order[:n_eval]]


def split_problem(n_pairs: int, eval_fraction: float) -> str | None:
    """Why ``n_pairs`` cannot give both a training and a held-out split, or None."""
    if n_pairs < 2:
        return f"holds {n_pairs} preference pair(s); a run needs at least 2: one to train on and one held out"
    if eval_fraction > 0 and held_out_count(n_pairs, eval_fraction) == 0:
        return f"{n_pairs} pairs give no held-out pair at eval_fraction {eval_fraction}"
    return None
