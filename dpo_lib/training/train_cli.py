"""``python -m dpo_lib train [key=value ...]`` (and the seed's ``python train.py ...``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys


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
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({"run_dir": cfg["run_dir"], "train": metrics}))
    return 0
