"""Session-wide test environment.

Airflow reads its configuration when first imported, so the variables that keep the
tests away from ~/airflow (and from the example DAGs) are set here, at collection time.
"""

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Fixtures every suite shares: the tiny model, toy data and training configs; the storage emulator.
pytest_plugins = ["tests.support.training", "tests.support.storage_fixtures"]

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dpo-tests-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
