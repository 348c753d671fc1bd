"""Which MLflow a run logs to: ``MLFLOW_TRACKING_URI`` when it is set (a tracking server, usually), else the
embedded default, which needs no server: a SQLite store and an artifact folder under the artifacts root
(``$DPO_ARTIFACTS_ROOT/_mlflow/``; ``make mlflow`` serves the UI over it).

The model registry is the tracking store's own (MLflow's ``MLFLOW_REGISTRY_URI`` still wins when set).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

EMBEDDED_DIR = "_mlflow"  # no experiment can be named so: exp_name starts with a letter or digit
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class TrackingTarget:
    """An MLflow tracking (and registry) store, and where new experiments keep their artifacts."""

    uri: str
    artifact_location: str | None = None  # None: the store's own default (a server decides)

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    def ui_url(self, experiment_id: str, run_id: str) -> str | None:
        """The run's page in the MLflow UI, when the store is a server (an embedded store has no UI
        until ``make mlflow`` serves one)."""
        if not self.is_server:
            return None
        return f"{self.uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

    def prepare(self) -> None:
        """Create the embedded store's folder (SQLite creates the file, not its folder)."""
        if self.uri.startswith("sqlite:///"):  # sqlite:////abs/path.db or sqlite:///relative.db
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def target_for(uri: str) -> TrackingTarget:
    """The target of a tracking URI; a SQLite store keeps new experiments' artifacts in ``artifacts/`` beside it
    (MLflow's own default, ``./mlruns``, would depend on the current folder)."""
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).resolve().parent
        return TrackingTarget(uri=uri, artifact_location=(folder / "artifacts").as_uri())
    return TrackingTarget(uri=uri)


def embedded_target(artifacts_root: str | Path) -> TrackingTarget:
    """The embedded default under ``artifacts_root``: ``_mlflow/mlflow.db`` and ``_mlflow/artifacts/``."""
    return target_for(f"sqlite:///{Path(artifacts_root).resolve() / EMBEDDED_DIR / 'mlflow.db'}")


def resolve_target(env: Mapping[str, str] | None = None, artifacts_root: str | Path | None = None) -> TrackingTarget:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded default under ``artifacts_root`` (default: the
    deployment's artifacts root, ``DPO_ARTIFACTS_ROOT``)."""
    env = os.environ if env is None else env
    if uri := (env.get(TRACKING_URI_ENV) or "").strip():
        return target_for(uri)
    if artifacts_root is None:
        from dpo_lib.settings import Settings

        artifacts_root = Settings.from_env(env).artifacts_root
    return embedded_target(artifacts_root)
