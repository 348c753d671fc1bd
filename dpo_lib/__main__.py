"""``python -m dpo_lib <command> ...``: the command-line entry point."""

from dpo_lib.cli import main

raise SystemExit(main())
