"""``make-toy-data PATH``: learnable toy preferences in the JSON-array ("novalto") format
(``--conversational``: the same pairs as chat messages, rendered by the model's chat template).

Each prompt asks about an item; the chosen answer describes it with words from
one vocabulary and the rejected answer with words from another. That signal is
consistent across items and sentence shapes, so a tiny model trained with DPO
picks it up and generalises to the held-out split (items and word combinations
it has not seen paired), which is what the demo and the tests check.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_text

ITEMS = (
    "lamp chair kettle bicycle garden window river bridge guitar camera jacket notebook "
    "teapot ladder blanket compass lantern mirror piano rocket tent violin wallet clock "
    "helmet kayak oven pillow scarf sofa telescope umbrella backpack candle drum"
).split()
PREFERRED = "helpful clear kind honest careful accurate patient precise friendly thoughtful".split()
DISPREFERRED = "rude vague careless sloppy wrong dismissive confusing lazy harsh misleading".split()
PROMPTS = (
    "Tell me about the {item}.",
    "What do you think of the {item}?",
    "Describe the {item} in one sentence.",
    "Give a short review of the {item}.",
    "Explain how to use the {item}.",
)
ANSWERS = (
    "The {item} answer is {a} and {b}.",
    "Here is a {a} and {b} note on the {item}.",
    "My reply about the {item} is {a}, {b} and short.",
    "A {a} answer: the {item} works well, and I am {b} about it.",
)


def make_toy_pairs(n: int = 1000, seed: int = 0) -> list[dict[str, str]]:
    """``n`` records ``{prompt, chosen, rejected}``; same seed, same records."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        item = rng.choice(ITEMS)
        shape = rng.choice(ANSWERS)
        good = rng.sample(PREFERRED, 2)
        bad = rng.sample(DISPREFERRED, 2)
        records.append(
            {
                "prompt": rng.choice(PROMPTS).format(item=item),
                "chosen": shape.format(item=item, a=good[0], b=good[1]),
                "rejected": shape.format(item=item, a=bad[0], b=bad[1]),
            }
        )
    return records


def as_conversation(record: Mapping[str, str]) -> dict[str, list[dict[str, str]]]:
    """A text pair as the conversational format's messages: the user asks, the assistant answers."""
    return {
        "prompt": [{"role": "user", "content": record["prompt"]}],
        "chosen": [{"role": "assistant", "content": record["chosen"]}],
        "rejected": [{"role": "assistant", "content": record["rejected"]}],
    }


def toy_corpus() -> Iterator[str]:
    """Text the tiny model's tokenizer is trained on: the toy vocabulary plus plain English."""
    words = ITEMS + PREFERRED + DISPREFERRED
    yield from PROMPTS
    yield from ANSWERS
    for record in make_toy_pairs(400, seed=1):
        yield from record.values()
    yield " ".join(words)
    yield "Human: Assistant: system user assistant the a an is are was and or not of to in on for with"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="file to write, e.g. data/dataset.json")
    parser.add_argument("-n", "--num-pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conversational", action="store_true", help="chat messages instead of plain text")


def run(args: argparse.Namespace) -> int:
    records: list[Any] = make_toy_pairs(args.num_pairs, args.seed)
    if args.conversational:
        records = [as_conversation(record) for record in records]
    atomic_write_text(Path(args.path), json.dumps(records, indent=1) + "\n")
    kind = "conversational " if args.conversational else ""
    print(f"wrote {len(records)} {kind}toy preference pairs to {args.path}")
    return 0
