"""FSDP on a GPU: does resuming from a sharded checkpoint add anything beyond run-to-run noise?

Trains the tiny model to step 4 twice, and once to step 2 then resumed to 4, all with
``trainer=fsdp`` on CUDA; prints the largest weight difference of each pair. bf16 kernels are
not bitwise deterministic, so the two straight runs set the noise floor.
    python bench/checks/fsdp_resume_determinism.py
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.tiny_model import build_tiny_model


def main() -> None:
    root = Path(tempfile.mkdtemp())
    model = build_tiny_model(root / "tiny")
    data = root / "toy.json"
    data.write_text(json.dumps(make_toy_pairs(200, seed=0)))
    base = [f"model.name_or_path={model}", f"datasets.toy.uri={data}", "exp_name=gpu", "batch_size=4",
            "warmup_steps=0", "log_every=1", "eval_every=0", "trainer=fsdp", "trainer.device=cuda",
            "checkpoint_every=2"]  # fmt: skip

    def train(*extra: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "dpo_lib", "train", *base, *extra], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]

    train("max_steps=4", f"run_dir={root / 'one'}")
    train("max_steps=4", f"run_dir={root / 'two'}")
    train("max_steps=2", f"run_dir={root / 'resumed'}")
    train("max_steps=4", f"run_dir={root / 'resumed'}")
    one, two, resumed = (load_file(root / name / "final" / "model.safetensors") for name in ("one", "two", "resumed"))
    print("fsdp gpu: max |straight - straight again|:", max((one[k] - two[k]).abs().max().item() for k in one))
    print("fsdp gpu: max |straight - resumed|:", max((one[k] - resumed[k]).abs().max().item() for k in one))


if __name__ == "__main__":
    main()
