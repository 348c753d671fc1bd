"""How the trainer's truncation cuts a dataset: token-length percentiles, and how many pairs lose
tokens and how many, measured in one streaming pass with the run's tokenizer and lengths.

Each pair is encoded and truncated by the trainer's own functions (:func:`~dpo_lib.data.tokenize.encode_pair`,
:func:`~dpo_lib.data.tokenize.truncate_pair`), so the counts are what training will see. Memory stays
bounded: lengths go into the histograms of :mod:`dpo_lib.data.stats`, never a list per pair.
"""

from __future__ import annotations

from typing import Any

from dpo_lib.data.pair import PreferencePair
from dpo_lib.data.stats import _FieldLengths
from dpo_lib.data.tokenize import TokenizedPair, encode_pair, truncate_pair
from dpo_lib.spec import TokenLengths, TrainConfig, Truncation

LENGTHS = ("prompt", "chosen", "rejected", "sequence")  # sequence: the prompt with the longer completion


class TruncationTracker:
    """Feed it pairs with :meth:`add`; :meth:`result` is the :class:`~dpo_lib.spec.Truncation` so far."""

    def __init__(self, tokenizer: Any, config: TrainConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.pair_count = 0
        self.truncated_pairs = self.prompt_truncated_pairs = self.response_truncated_pairs = 0
        self.tokens_dropped = self.max_tokens_dropped = 0
        self._lengths = [_FieldLengths() for _ in LENGTHS]

    def add(self, pair: PreferencePair) -> None:
        config = self.config
        prompt, chosen, rejected = encode_pair(pair, self.tokenizer)
        cut = truncate_pair(prompt, chosen, rejected, max_length=config.max_length,
                            max_prompt_length=config.max_prompt_length, truncation_mode=config.truncation_mode)  # fmt: skip
        sizes = (len(prompt), len(chosen), len(rejected), len(prompt) + max(len(chosen), len(rejected)))
        for lengths, size in zip(self._lengths, sizes, strict=True):
            lengths.add(self.pair_count, size)
        self.add_tokenized(cut)

    def add_tokenized(self, cut: TokenizedPair) -> None:
        """Count a pair the rule has truncated already (its lengths before truncation are then unknown)."""
        self.pair_count += 1
        if cut.truncated:
            self.truncated_pairs += 1
            self.prompt_truncated_pairs += cut.prompt_truncated > 0
            self.response_truncated_pairs += cut.truncated > cut.prompt_truncated
            self.tokens_dropped += cut.truncated
            self.max_tokens_dropped = max(self.max_tokens_dropped, cut.truncated)

    def result(self) -> Truncation:
        config = self.config
        lengths = {}
        for name, field_lengths in zip(LENGTHS, self._lengths, strict=True):
            stats = field_lengths.stats()
            if stats.max is not None:
                lengths[name] = TokenLengths(p50=float(stats.p50), p90=float(stats.p90), p99=float(stats.p99),
                                             max=int(stats.max))  # fmt: skip
        return Truncation(
            tokenizer=config.model.tokenizer_name_or_path or config.model.name_or_path,
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            truncation_mode=config.truncation_mode,
            pair_count=self.pair_count,
            truncated_pairs=self.truncated_pairs,
            prompt_truncated_pairs=self.prompt_truncated_pairs,
            response_truncated_pairs=self.response_truncated_pairs,
            tokens_dropped=self.tokens_dropped,
            max_tokens_dropped=self.max_tokens_dropped,
            lengths=lengths,
        )


def measure_truncation(source: Any, tokenizer: Any, config: TrainConfig, *, format: str | None = None) -> Truncation:
    """:class:`TruncationTracker` over the pairs of a dataset that validation already passed."""
    from dpo_lib.data.dataset import open_dataset

    tracker = TruncationTracker(tokenizer, config)
    for pair in open_dataset(source, format).iter_pairs():
        tracker.add(pair)
    return tracker.result()


def truncation_of(pairs: list[TokenizedPair], config: TrainConfig) -> Truncation:
    """The counts of :class:`~dpo_lib.spec.Truncation` for pairs the trainer tokenized (no ``lengths``)."""
    tracker = TruncationTracker(None, config)
    for pair in pairs:
        tracker.add_tokenized(pair)
    return tracker.result()
