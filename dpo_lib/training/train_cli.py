"""``python -m dpo_lib train [key=value ...]`` (and the seed's ``python train.py ...``).

Exit status: 0 trained, 2 config error, 3 the disk filled up (one line names the run folder and
the checkpoint kept; the same command resumes once there is space), 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

EXIT_DISK_FULL = 3  # 2 is a config error; any other failure ends in a traceback and 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. model=tiny datasets=[toy] loss=dpo exp_name=my_exp lr=1e-4",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for noisy in ("httpx", "urllib3", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    import json

    from dpo_lib.config import ConfigError, compose_config

    try:
        cfg = compose_config(args.overrides)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(cfg, indent=2))
        return 0

    from dpo_lib.training.launch import needs_launch, relaunch_under_torchrun

    if needs_launch(cfg):
        return relaunch_under_torchrun(cfg, args.overrides)
    configure_logging()
    from dpo_lib.training.runner import train

    try:
        metrics = train(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from dpo_lib.io import is_disk_full

        if not is_disk_full(exc):
            raise
        print(disk_full_message(cfg["run_dir"], exc), file=sys.stderr)
        return EXIT_DISK_FULL
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"run_dir": cfg["run_dir"], "train": metrics}))
    return 0


def disk_full_message(run_dir: str, exc: BaseException) -> str:
    """One line for a run stopped by a full disk: where, what was being written, what was kept."""
    from dpo_lib.training.checkpoint import latest_checkpoint

    kept = latest_checkpoint(run_dir)
    reason = " ".join(str(exc).split())[:300]
    return (
        f"error: no space left on device under {run_dir} ({reason}); "
        f"{f'the newest complete checkpoint {kept} is kept' if kept else 'no complete checkpoint yet'}; "
        "free some space and run the same command again to resume"
    )
