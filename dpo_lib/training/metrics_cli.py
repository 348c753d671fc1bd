"""``python -m dpo_lib metrics RUN_DIR``: print a run's metrics.json, and where it is."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a run directory, or a folder of runs (the newest one is shown)")


def newest_run(path: Path) -> Path | None:
    if (path / "metrics.json").exists():
        return path
    runs = sorted(path.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


def run(args: argparse.Namespace) -> int:
    run_dir = newest_run(Path(args.run_dir))
    if run_dir is None:
        print(f"error: no metrics.json in {args.run_dir} or the runs under it", file=sys.stderr)
        return 1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"metrics: {(run_dir / 'metrics.json').resolve()}", file=sys.stderr)  # stdout: JSON alone, for jq
    return 0
