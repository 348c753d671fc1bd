"""``airflow dags test dpo_finetune`` in a subprocess, in a folder of its own.

Each work folder gets its own AIRFLOW_HOME (SQLite), staging and artifacts roots, and MLflow's
embedded default store, so nothing touches the project's own folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_env(work: Path, **extra: str) -> dict[str, str]:
    """The environment of a run in ``work``; ``extra`` adds or replaces variables."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DPO_WORKDIR": str(work),
        "DPO_STAGING_ROOT": str(work / "staging"),
        "DPO_ARTIFACTS_ROOT": str(work / "artifacts"),
        "PYTHONUNBUFFERED": "1",
        **extra,
    }
    env.pop("MLFLOW_TRACKING_URI", None)  # the embedded default, under the artifacts root
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)


def dags_test(env: dict[str, str], conf: dict, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AIRFLOW, "dags", "test", "dpo_finetune", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_toy_inputs(work: Path) -> None:
    """The tiny model in ``models/tiny`` and the toy dataset in ``data/dataset.json``."""
    dpo = [sys.executable, "-m", "dpo_lib"]
    subprocess.run([*dpo, "make-tiny-model", str(work / "models" / "tiny")], check=True, capture_output=True)
    subprocess.run([*dpo, "make-toy-data", str(work / "data" / "dataset.json")], check=True, capture_output=True)
