"""Command dispatch for ``python -m dpo_lib``.

Each command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs, so
``validate`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# Set (to "1") by the local runner for the commands an Airflow task runs. Airflow starts them in a
# session of their own, so when the task's process dies without stopping them (the scheduler, and
# with it the LocalExecutor's supervisors, killed or crashed), nothing else would: a trainer would
# train on, unseen, while the task's retry resumes in the same run directory. With this set the
# kernel sends the command SIGTERM when the process that started it dies.
EXIT_WITH_PARENT_ENV = "DPO_EXIT_WITH_PARENT"

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("dpo_lib.data.validate_cli", "validate a preference dataset"),
    "train": ("dpo_lib.training.train_cli", "train with DPO from configs/ and key=value overrides"),
    "evaluate": ("dpo_lib.training.evaluate_cli", "evaluate a run's policy and reference on the held-out split"),
    "make-tiny-model": ("dpo_lib.tiny_model", "build a tiny Hugging Face model directory locally"),
    "make-toy-data": ("dpo_lib.data.toy", "write a learnable toy preference dataset"),
    "metrics": ("dpo_lib.training.metrics_cli", "print a run's metrics.json"),
    "bench": ("dpo_lib.bench", "measure training throughput, MFU and peak memory"),
    "bench-data": ("dpo_lib.data.bench_data", "measure dataset validation speed (MB/s) and peak memory"),
    "services": ("dpo_lib.serving.services_cli", "run Airflow's api-server, scheduler, dag-processor and triggerer"),
    "trigger": ("dpo_lib.serving.trigger_cli", "trigger dpo_finetune through Airflow's REST API (--wait: metrics)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpo_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        build_parser().parse_args(argv)  # prints usage or a clear "invalid choice" error
        return 2
    name, rest = argv[0], argv[1:]
    from dpo_lib.training.launch import bind_worker_to_torchrun, die_with_parent  # no torch: ctypes

    if os.environ.get(EXIT_WITH_PARENT_ENV) == "1" and "LOCAL_RANK" not in os.environ:
        die_with_parent(signal.SIGTERM)  # started by an Airflow task: must not outlive it (see below)
    bind_worker_to_torchrun()  # a worker torchrun started must not outlive it
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"python -m dpo_lib {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    return int(module.run(args) or 0)
