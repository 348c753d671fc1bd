"""What a run was made from, as MLflow tags and params: the DAG run, the dataset and its digest, the
base model (preset or URI, and its content hash when stage staged it), the project's git commit, the
trainer and the adapter. A run from a run spec knows all of it; a command-line run what its config says.

Tags are ``dpo.*`` (plus MLflow's own ``mlflow.source.git.commit``); params are the resolved training
config flattened to dotted keys (``loss.beta``, ``datasets.from_uri.uri``).
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dpo_lib.settings import PROJECT_DIR

if TYPE_CHECKING:
    from dpo_lib.spec import RunSpec, TrainConfig

MAX_PARAM_CHARS = 6000  # MLflow's limit on a param's value
MAX_TAG_CHARS = 5000


@dataclass(frozen=True)
class Lineage:
    exp_name: str
    run_dir: str
    trainer: str
    adapter: str
    loss: str
    base_model: str  # the request's model_uri, or the preset's name
    base_model_path: str
    base_model_hash: str | None = None
    datasets: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # name -> (uri, sha256)
    dag_id: str | None = None
    run_id: str | None = None

    @classmethod
    def of(cls, config: TrainConfig, spec: RunSpec | None = None) -> Lineage:
        """From the run's training config (the staged one, for a DAG run) and, when there is one, its spec."""
        from dpo_lib.spec import STAGED_DATASET

        model = config.model
        model_uri = getattr(spec.request, "model_uri", None) if spec is not None else None
        source_uri = getattr(model, "source_uri", None)
        datasets = {name: (dataset.uri, dataset.sha256) for name, dataset in config.datasets.items()}
        if spec is not None and STAGED_DATASET in datasets:  # the original URI, not the staged copy
            datasets[STAGED_DATASET] = (spec.request.dataset_uri, datasets[STAGED_DATASET][1])
        return cls(
            exp_name=config.exp_name,
            run_dir=str(config.run_dir),
            trainer=config.trainer.name,
            adapter=config.adapter.name,
            loss=config.loss.name,
            base_model=model_uri or source_uri or model.name,
            base_model_path=model.name_or_path,
            base_model_hash=getattr(model, "content_hash", None),
            datasets=datasets,
            dag_id=spec.dag_id if spec is not None else None,
            run_id=spec.run_id if spec is not None else None,
        )

    def tags(self) -> dict[str, str]:
        """The ``dpo.*`` tags (unknown values left out); the git commit is looked up here, once a process."""
        tags = {
            "dpo.exp_name": self.exp_name,
            "dpo.run_dir": self.run_dir,
            "dpo.trainer": self.trainer,
            "dpo.adapter": self.adapter,
            "dpo.loss": self.loss,
            "dpo.base_model": self.base_model,
            "dpo.base_model_path": self.base_model_path,
            "dpo.base_model_hash": self.base_model_hash,
            "dpo.dag_id": self.dag_id,
            "dpo.run_id": self.run_id,
        }
        if len(self.datasets) == 1:
            ((uri, sha256),) = self.datasets.values()
            tags["dpo.dataset_uri"], tags["dpo.dataset_sha256"] = uri, sha256
        else:
            for name, (uri, sha256) in self.datasets.items():
                tags[f"dpo.dataset.{name}.uri"], tags[f"dpo.dataset.{name}.sha256"] = uri, sha256
        commit, dirty = git_state()
        if commit:
            tags["dpo.git_commit"] = tags["mlflow.source.git.commit"] = commit
            tags["dpo.git_dirty"] = str(dirty).lower()
        return {key: str(value)[:MAX_TAG_CHARS] for key, value in tags.items() if value is not None}

    @property
    def base_model_id(self) -> str:
        """What identifies the base model's weights: its content hash when staged, else its path or Hub name."""
        return self.base_model_hash or self.base_model_path


def flat_params(config: TrainConfig) -> dict[str, str]:
    """The resolved training config as MLflow params: dotted keys, values as strings (lists as JSON)."""
    return {key: _param_value(value) for key, value in _flatten(config.model_dump(mode="json")).items()}


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) or value is None else str(value)
    return text[:MAX_PARAM_CHARS]


@functools.cache
def git_state() -> tuple[str | None, bool]:
    """The project's git commit and whether its tracked files have changes; (None, False) outside a
    checkout (an image) or without git."""
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_DIR), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None, False
    return (commit or None), bool(status.strip())
