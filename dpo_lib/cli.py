"""Command dispatch for ``python -m dpo_lib``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their command runs, so ``validate`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dpo_lib.processes import bind_to_parent

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("dpo_lib.data.validate_cli", "validate a preference dataset"),
    "train": ("dpo_lib.training.recipe", "train from a run spec, or from configs/ and key=value overrides"),
    "evaluate": ("dpo_lib.training.evaluate", "evaluate a run's policy and reference on the held-out split"),
    "compare": ("dpo_lib.results.compare", "a DAG run's model and the champion on the same held-out pairs"),
    "make-tiny-model": ("dpo_lib.tiny_model", "build a tiny Hugging Face model directory locally"),
    "make-toy-data": ("dpo_lib.data.toy", "write a learnable toy preference dataset"),
    "metrics": ("dpo_lib.training.metrics_cli", "print a run's metrics.json"),
    "bench": ("dpo_lib.bench", "measure training throughput, MFU and peak memory"),
    "bench-data": ("dpo_lib.data.bench_data", "measure dataset validation speed (MB/s) and peak memory"),
    "schema": ("dpo_lib.schema_cli", "print or write the run contract's JSON Schemas and reference tables"),
    "services": ("dpo_lib.airflow_local.services_cli", "run Airflow's api-server, scheduler, dag-processor, triggerer"),
    "trigger": ("dpo_lib.api.trigger_cli", "trigger dpo_finetune through Airflow's REST API (--wait: metrics)"),
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
    bind_to_parent()  # started by an Airflow task or by torchrun: never outlive it
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"python -m dpo_lib {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    args.argv = rest  # what a command re-runs under torchrun
    return int(module.run(args) or 0)
