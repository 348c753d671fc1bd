"""What a run's report shows, read from its run folder (``$DPO_ARTIFACTS_ROOT/<exp_name>/<run_key>/``).

Reads defensively: a run in flight, or one that failed early, has written only some of its files
(docs/results.md lists them). Nothing here imports Airflow or torch; :mod:`dpo_lib.api.report`
adds the task states from Airflow.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dpo_lib.orchestration.runs import DATASET_RECORD, RUN_RECORD, read_record
from dpo_lib.spec import Truncation

# The files the report reads, in the order a run writes them, and who writes each.
FILES = {
    RUN_RECORD: "validate",
    DATASET_RECORD: "stage",
    "config.json": "train",
    "history.jsonl": "train",
    "metrics.json": "train and evaluate",
    "publish.json": "publish",
    "samples.json": "compare",
    "promotion.json": "promote",
    "tracking.json": "train (MLflow tracking)",
}
CURVES = {"loss": "Loss", "rewards/accuracies": "Reward accuracy", "rewards/margins": "Reward margin"}
# The eval table's rows: these first (when present), then every other metric the runs report.
EVAL_ROWS = ("loss", "rewards/accuracies", "rewards/margins", "logps/accuracies", "logps/chosen", "logps/rejected")
MAX_HISTORY_LINES = 200_000
MAX_SAMPLES = 50


@dataclass
class RunFolder:
    """The parsed files of one run folder; ``None`` (and a name in :attr:`missing`) for each one not there."""

    path: Path | None
    run: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    promotion: dict[str, Any] | None = None
    publish: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    final_files: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def request(self) -> dict[str, Any]:
        return (self.run or {}).get("request") or {}


def truncation(folder: RunFolder) -> Truncation | None:
    """What truncation cut: train's count of the pairs it trained on (metrics.json), with the token lengths
    stage measured for a ``model_uri`` run (the manifest); stage's alone before train has run."""
    trained = _truncation(_part(folder.metrics, "data", "truncation"))
    staged = _truncation(_part(folder.dataset, "manifest", "truncation"))
    if trained is None:
        return staged
    if staged is not None and not trained.lengths:
        return trained.model_copy(update={"lengths": staged.lengths})
    return trained


def read_run_folder(path: Path | None) -> RunFolder:
    """Every file the report uses from ``path``; a missing, partial or unreadable file counts as not there."""
    if path is None or not path.is_dir():
        return RunFolder(path=None, missing=list(FILES))
    folder = RunFolder(path=path)
    folder.run = read_record(path / RUN_RECORD)
    folder.dataset = read_record(path / DATASET_RECORD)
    folder.config = read_record(path / "config.json")
    folder.metrics = read_record(path / "metrics.json")
    folder.promotion = read_record(path / "promotion.json")
    folder.publish = read_record(path / "publish.json")
    folder.tracking = read_record(path / "tracking.json")
    folder.history = read_history(path / "history.jsonl")
    folder.samples = read_samples(path / "samples.json")
    final = path / "final"
    if final.is_dir():
        folder.final_files = sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file())[:200]
    present = {
        RUN_RECORD: folder.run,
        DATASET_RECORD: folder.dataset,
        "config.json": folder.config,
        "history.jsonl": folder.history or None,
        "metrics.json": folder.metrics,
        "publish.json": folder.publish,
        "samples.json": folder.samples or None,
        "promotion.json": folder.promotion,
        "tracking.json": folder.tracking,
    }
    folder.missing = [name for name, value in present.items() if value is None]
    return folder


def read_history(path: Path) -> list[dict[str, Any]]:
    """The well-formed lines of ``history.jsonl`` (a line being written, or a bad one, is skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines):
                if number >= MAX_HISTORY_LINES:
                    break
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("metrics"), dict) and _number(row.get("step")):
                    rows.append(row)
    except OSError:
        return []
    return rows


def read_samples(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return []
    if isinstance(data, dict):  # {"samples": [...]} as well as a bare list
        data = data.get("samples")
    if not isinstance(data, list):
        return []
    return [row for row in data if isinstance(row, dict)][:MAX_SAMPLES]


def curves(history: list[dict[str, Any]]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """``{metric: {split: [(step, value), ...]}}`` for the report's curves; a later line for the same step wins
    (a retried ``train`` logs the steps since its checkpoint again)."""
    series: dict[str, dict[str, dict[float, float]]] = {}
    for row in history:
        split = str(row.get("split") or "train")
        for metric in CURVES:
            value = row["metrics"].get(metric)
            if _number(value):
                series.setdefault(metric, {}).setdefault(split, {})[float(row["step"])] = float(value)
    return {metric: {split: sorted(points.items()) for split, points in by_split.items()}
            for metric, by_split in series.items()}  # fmt: skip


def eval_table(folder: RunFolder) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """The eval table: its columns (policy, reference, champion: those with metrics) and one row per metric."""
    evaluation = (folder.metrics or {}).get("eval") or {}
    columns: dict[str, dict[str, Any]] = {}
    policy = {k: v for k, v in evaluation.items() if _number(v)}
    if policy:
        columns["policy"] = policy
    if isinstance(evaluation.get("reference"), dict):
        columns["reference"] = {k: v for k, v in evaluation["reference"].items() if _number(v)}
    if champion := champion_metrics(folder.promotion):
        columns["champion"] = champion
    names = [name for name in EVAL_ROWS if any(name in c for c in columns.values())]
    names += sorted({name for c in columns.values() for name in c} - set(names))
    rows = [(name, [_float(c.get(name)) for c in columns.values()]) for name in names]
    return list(columns), rows


def champion_metrics(promotion: dict[str, Any] | None) -> dict[str, float]:
    """The champion's eval metrics from ``promotion.json`` (``champion.metrics``, or the champion's own numbers)."""
    champion = (promotion or {}).get("champion")
    if not isinstance(champion, dict):
        return {}
    source = champion.get("metrics") if isinstance(champion.get("metrics"), dict) else champion
    return {k: v for k, v in source.items() if _number(v) and k not in ("version", "step")}


def tracking_url(tracking: dict[str, Any] | None) -> str | None:
    """The MLflow UI link in ``tracking.json``, whatever its key (``run_url``, ``ui_url``, ``url``)."""
    tracking = tracking or {}
    for key in ("run_url", "ui_url", "url"):
        if isinstance(tracking.get(key), str):
            return tracking[key]
    for key, value in tracking.items():
        if key.endswith("url") and key != "tracking_uri" and isinstance(value, str):
            return value
    return None


def without_credentials(uri: Any) -> str | None:
    """``uri`` without a user or password in it (``https://user:token@host`` is ``https://host``), nor a query."""
    from urllib.parse import urlsplit, urlunsplit

    if not isinstance(uri, str):
        return None
    try:
        parts = urlsplit(uri)
        if "@" not in parts.netloc and not parts.query:
            return uri
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "(not shown)"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def stored_model_uri(folder: RunFolder) -> str | None:
    """Where the model was uploaded (the request's ``output_uri``, as tracking or promotion recorded it)."""
    for source in (folder.publish, folder.promotion, folder.tracking, folder.request):
        for key in ("model_uri", "uploaded_uri", "output_uri"):
            if isinstance((source or {}).get(key), str):
                return source[key]
    return None


def registered_version(folder: RunFolder) -> str | None:
    """``<registered model> version <n>``, as publish registered it."""
    published = folder.publish or {}
    name, version = published.get("registered_model_name"), published.get("version")
    if isinstance(name, str) and version is not None:
        return f"{name} version {version}"
    return None


def summary(folder: RunFolder) -> dict[str, Any]:
    """The few numbers the runs list compares: final train loss, eval accuracy and margin (policy and
    reference), and the promotion decision."""
    metrics = folder.metrics or {}
    train, evaluation = metrics.get("train") or {}, metrics.get("eval") or {}
    reference = evaluation.get("reference") if isinstance(evaluation.get("reference"), dict) else {}
    promotion = folder.promotion or {}
    return {
        "exp_name": (folder.run or {}).get("exp_name") or (folder.config or {}).get("exp_name"),
        "model": folder.request.get("model_uri") or folder.request.get("model"),
        "loss_name": folder.request.get("loss"),
        "steps": _float(train.get("step")),
        "train_loss": _float(train.get("loss")),
        "eval_loss": _float(evaluation.get("loss")),
        "eval_accuracy": _float(evaluation.get("rewards/accuracies")),
        "eval_margin": _float(evaluation.get("rewards/margins")),
        "reference_accuracy": _float(reference.get("logps/accuracies")),
        "decision": promotion.get("decision") if isinstance(promotion.get("decision"), str) else None,
        "dataset_sha256": _part(folder.dataset, "manifest", "sha256"),
        "truncated_share": _truncated_share(truncation(folder)),
    }


def _truncation(record: Any) -> Truncation | None:
    try:
        return Truncation.model_validate(record) if isinstance(record, dict) else None
    except ValidationError:
        return None


def _truncated_share(cut: Truncation | None) -> float | None:
    return cut.truncated_pairs / cut.pair_count if cut is not None and cut.pair_count else None


def _part(record: Any, *keys: str) -> Any:
    """``record[k1][k2]...``, or None where a level is missing or not an object."""
    for key in keys:
        if not isinstance(record, dict):
            return None
        record = record.get(key)
    return record


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _float(value: Any) -> float | None:
    return float(value) if _number(value) else None
