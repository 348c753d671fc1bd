"""The seed's entry point, kept for existing callers: ``python train.py model=tiny datasets=[toy] loss=dpo exp_name=x``.

It is ``python -m dpo_lib train`` with the same arguments.
"""

import sys

from dpo_lib.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
