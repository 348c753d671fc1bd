"""``python -m dpo_lib bench-data``: how fast dataset validation reads, and how much memory it needs.

For each case (``json``, ``jsonl``, ``conversational``, ``conversational-jsonl``) it writes
``--records`` realistic records, validates them in a fresh Python process and prints one JSON line:
file size, wall and CPU time, throughput in MB/s and the process's peak resident memory (``VmHWM``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CASES = ("json", "jsonl", "conversational", "conversational-jsonl")
DEFAULT_RECORDS = 150_000  # about 360 MB of text records

_WORDS = (
    "the of and to in is you that it was for on are as with they at be this have from or one had by word but "
    "not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number "
    "no way could people my than first water been call who its now find long down day did get come made may "
    "part model training data preference answer question reason because however example function value result"
).split()
_SPICE = ("café", "naïve", "—", "→", "Größe", "日本語", "😀", '"quoted"', "C:\\temp", "a\ttab")
_SYSTEM = "You are a helpful assistant. Answer clearly and briefly."


class _Texts:
    """Pools of prose to draw from: random words, some sentence breaks and the odd non-ASCII word."""

    def __init__(self, rng: random.Random, size: int = 4096) -> None:
        self.prompts = [self._paragraph(rng, rng.randint(10, 90)) for _ in range(size)]
        self.answers = [self._paragraph(rng, rng.randint(40, 400)) for _ in range(size)]

    @staticmethod
    def _paragraph(rng: random.Random, words: int) -> str:
        chosen = rng.choices(_WORDS, k=words)
        if rng.random() < 0.3:
            chosen[rng.randrange(words)] = rng.choice(_SPICE)
        for _ in range(words // 60):
            at = rng.randrange(words)
            chosen[at] += rng.choice((".\n\n", ".", ","))
        return " ".join(chosen)


def records(case: str, count: int, seed: int = 0) -> Iterator[dict[str, Any]]:
    """``count`` distinct records for ``case`` (text or message lists), the same for a given seed."""
    rng = random.Random(seed)
    texts = _Texts(rng)
    conversational = case.startswith("conversational")
    for i in range(count):
        prompt = f"Question {i}: {rng.choice(texts.prompts)}"
        chosen, rejected = rng.sample(texts.answers, 2)
        if not conversational:
            yield {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            continue
        turns = [{"role": "system", "content": _SYSTEM}]
        if i % 3 == 0:  # every third conversation has an earlier exchange
            turns += [
                {"role": "user", "content": rng.choice(texts.prompts)},
                {"role": "assistant", "content": rng.choice(texts.answers)},
            ]
        turns.append({"role": "user", "content": prompt})
        yield {
            "prompt": turns,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }


def write_dataset(path: Path, case: str, count: int, seed: int = 0) -> int:
    """Write the dataset of ``case`` to ``path``; return its size in bytes."""
    lines = case.endswith("jsonl")
    with path.open("w", encoding="utf-8") as out:
        if not lines:
            out.write("[")
        for i, record in enumerate(records(case, count, seed)):
            text = json.dumps(record, ensure_ascii=False)
            out.write(f"{text}\n" if lines else f"{', ' if i else ''}{text}")
        if not lines:
            out.write("]\n")
    return path.stat().st_size


def peak_rss_mib() -> float:
    """This process's peak resident memory, in MiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):  # no procfs: the best the OS offers
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_main() -> None:
    """In the fresh process: validate ``sys.argv[1]`` and print the timings as JSON."""
    import numpy  # noqa: F401 - the pass needs it; a fixed import cost, not reading speed

    from dpo_lib.data.dataset import open_dataset

    wall, cpu = time.perf_counter(), time.process_time()
    report = open_dataset(sys.argv[1]).validate()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    summary = {"ok": report.ok, "records": report.record_count, "warnings": report.warning_count}
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "peak_rss_mib": peak_rss_mib(), **summary}))


def measure(path: Path) -> dict[str, Any]:
    """Validate ``path`` in a fresh interpreter: its timings, report summary and peak RSS."""
    command = [sys.executable, "-c", "from dpo_lib.data.bench_data import _child_main; _child_main()", str(path)]
    started = time.perf_counter()
    child = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"validating {path} failed with exit status {child.returncode}")
    return {**json.loads(child.stdout), "command_seconds": time.perf_counter() - started}


def bench_case(case: str, count: int, directory: Path, seed: int = 0) -> dict[str, Any]:
    path = directory / f"bench-{case}.{'jsonl' if case.endswith('jsonl') else 'json'}"
    size = write_dataset(path, case, count, seed)
    result = measure(path)
    path.unlink()
    return {
        "case": case,
        "records": count,
        "bytes": size,
        "mb_per_s": round(size / result["seconds"] / 1e6, 1),
        "cpu_mb_per_s": round(size / result["cpu_seconds"] / 1e6, 1),
        "seconds": round(result["seconds"], 3),
        "cpu_seconds": round(result["cpu_seconds"], 3),
        "command_seconds": round(result["command_seconds"], 3),
        "peak_rss_mib": round(result["peak_rss_mib"], 1),
        "ok": result["ok"],
        "validated_records": result["records"],
        "warnings": result["warnings"],
        "cpus": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": sys.version.split()[0],
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--records", type=int, default=DEFAULT_RECORDS, help="records per dataset (default: %(default)s)"
    )
    parser.add_argument(
        "--format",
        dest="cases",
        nargs="+",
        choices=CASES,
        default=list(CASES),
        metavar="CASE",
        help=f"cases to run, any of: {', '.join(CASES)} (default: all)",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the datasets (default: a temporary folder)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated text")


def run(args: argparse.Namespace) -> int:
    if args.records < 1:
        print("error: --records must be at least 1", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-data-", dir=args.dir) as tmp:
        for case in args.cases:
            print(json.dumps(bench_case(case, args.records, Path(tmp), args.seed)), flush=True)
    return 0
