"""Deployment settings of the pipeline, from environment variables (all optional)."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    workdir: Path  # where the trainer runs; relative paths in configs/ resolve against it
    local_storage_root: Path  # local dataset paths must stay under it
    staging_root: Path  # per-run dataset copies, removed by cleanup
    artifacts_root: Path  # per-run checkpoints, final model, metrics.json
    runner: str  # "local": a subprocess on the worker
    python: str  # the interpreter the local runner starts

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        workdir = Path(env.get("DPO_WORKDIR", PROJECT_DIR)).resolve()
        return cls(
            workdir=workdir,
            local_storage_root=Path(env.get("DPO_LOCAL_STORAGE_ROOT", workdir)).resolve(),
            staging_root=Path(env.get("DPO_STAGING_ROOT", workdir / "var" / "staging")).resolve(),
            artifacts_root=Path(env.get("DPO_ARTIFACTS_ROOT", workdir / "artifacts" / "runs")).resolve(),
            runner=env.get("DPO_RUNNER", "local"),
            python=env.get("DPO_PYTHON", sys.executable),
        )


def path_safe(name: str) -> str:
    """A run id such as ``manual__2026-01-01T00:00:00+00:00`` as one safe path component."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "_"
