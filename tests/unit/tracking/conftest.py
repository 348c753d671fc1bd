"""A real MLflow store per test: SQLite in the test's folder, copied from one migrated once a session
(creating MLflow's tables takes seconds; copying the file, milliseconds)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dpo_lib.tracking.target import TrackingTarget, target_for


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # creates the tables
    return path


@pytest.fixture
def store(migrated_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> TrackingTarget:
    """A fresh store, and MLFLOW_TRACKING_URI naming it (what the tasks resolve)."""
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir()
    shutil.copy(migrated_store, db)
    target = target_for(f"sqlite:///{db}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", target.uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    return target


@pytest.fixture
def client(store: TrackingTarget):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.uri, registry_uri=store.uri)
