"""The ``promote`` task (on the Airflow worker, no torch): the champion gate's decision on ``compare``'s
numbers, applied (the ``champion`` alias moved or kept) and recorded in the task log, MLflow tags, XCom
and ``run_dir/promotion.json`` (written after the alias moves; a retry returns it). Then the run report
(``run_dir/report.html``) is written and stored with promotion.json and samples.json under
``<output_uri>report/``. Format and decisions: docs/results.md#the-champion-gate.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_json
from dpo_lib.results import gate, locations, registry
from dpo_lib.results.compare import COMPARISON_FILE
from dpo_lib.results.publish import PUBLISH_FILE
from dpo_lib.results.report_copy import REPORT_PREFIX, store_report, write_report
from dpo_lib.results.samples import SAMPLES_FILE
from dpo_lib.results.upload import MARKER
from dpo_lib.settings import Settings
from dpo_lib.spec import RunSpec

log = logging.getLogger(__name__)

PROMOTION_FILE = "promotion.json"
DEFAULT_REPORT_BASE = "http://localhost:8080"  # the Airflow UI of `make api`; the DAG passes its own


def promote(spec_path: str | Path, *, report_base: str = DEFAULT_REPORT_BASE,
            settings: Settings | None = None) -> dict[str, Any]:  # fmt: skip
    """Decide, move the alias when the challenger won, record, and store the report (its links to Airflow
    at ``report_base``); returns what promotion.json says."""
    settings = settings or Settings.from_env()
    spec = RunSpec.read(spec_path)
    published = _read(spec.run_dir / PUBLISH_FILE, "publish")
    promotion = decide(spec, published)
    write_report(spec, settings, report_base)
    stored = store_report(spec, published["output_uri"], settings)
    log.info("the report is stored at %s%s (%d files, %s last)", published["output_uri"], REPORT_PREFIX,
             len(stored["files"]), MARKER)  # fmt: skip
    return promotion


def decide(spec: RunSpec, published: dict[str, Any]) -> dict[str, Any]:
    """The gate's decision, applied (the alias) and recorded (tags, promotion.json), once: a retry finds it."""
    from dpo_lib.tracking.mlflow_run import make_client
    from dpo_lib.tracking.target import resolve_target

    run_dir = spec.run_dir
    comparison = _read(run_dir / COMPARISON_FILE, "compare")
    name, version = published["registered_model_name"], str(published["version"])
    done = _read(run_dir / PROMOTION_FILE, None)
    if done and done.get("versions", {}).get("challenger") == version:
        log.info("promotion: %s (decided before this try) - %s", done["decision"], done["reason"])
        return done

    settings = locations.promotion_config(spec.request)
    metric = settings.metric
    client = make_client(resolve_target(), patient=True)
    compared_with = comparison.get("champion_version")
    challenger_value = float(comparison["challenger"][metric])
    champion_metrics = comparison.get("champion")
    champion_value = float(champion_metrics[metric]) if champion_metrics else None
    current = registry.champion(client, name)
    current_version = str(current.version) if current is not None else None

    if compared_with is not None and comparison.get("not_compared"):
        if current_version == version:
            decision = gate.Decision("promoted", f"version {version} is already the champion (a retry)")
        else:
            decision = gate.Decision("kept", f"the champion, version {compared_with}, was not evaluated: "
                                             f"{comparison['not_compared']}")  # fmt: skip
    else:
        decision = gate.decide(metric, settings.min_delta, challenger_value, champion_value)
    if decision.decision in ("promoted", "first") and current_version not in (compared_with, version):
        decision = gate.Decision("kept", f"the champion moved to version {current_version} while this run was "
                                         f"compared with {compared_with or 'no champion'}; not promoted")  # fmt: skip
    if decision.decision in ("promoted", "first") and current_version != version:
        registry.make_champion(client, name, version)

    promotion = {
        "decision": decision.decision,
        "reason": decision.reason,
        "metric": metric,
        "higher_is_better": gate.higher_is_better(metric),
        "min_delta": settings.min_delta,
        "registered_model_name": name,
        "challenger": {"version": version, "value": challenger_value, "metrics": comparison["challenger"]},
        "champion": None
        if compared_with is None
        else {"version": compared_with, "value": champion_value, "metrics": champion_metrics},
        "versions": {"challenger": version, "champion": compared_with},
        "n_pairs": comparison.get("n_pairs"),
        "dag_id": spec.dag_id,
        "run_id": spec.run_id,
        "decided_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    record(client, published, promotion, run_dir)
    atomic_write_json(run_dir / PROMOTION_FILE, promotion)
    log.info("promotion: %s - %s", decision.decision, decision.reason)
    return promotion


def record(client: Any, published: dict[str, Any], promotion: dict[str, Any], run_dir: Path) -> None:
    """The decision as ``dpo.promotion.*`` tags of the model version and the MLflow run; promotion.json and
    samples.json as the run's artifacts (best effort: the run folder holds them anyway)."""
    champion = promotion["champion"] or {}
    tags = {
        "dpo.promotion.decision": promotion["decision"],
        "dpo.promotion.reason": promotion["reason"][:5000],
        "dpo.promotion.metric": promotion["metric"],
        "dpo.promotion.min_delta": str(promotion["min_delta"]),
        "dpo.promotion.challenger": str(promotion["challenger"]["value"]),
        "dpo.promotion.champion": str(champion.get("value")),
        "dpo.promotion.champion_version": str(champion.get("version")),
    }
    registry.tag_version(client, promotion["registered_model_name"], promotion["challenger"]["version"], tags)
    run_id = published["mlflow_run_id"]
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    try:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="dpo-promotion-") as tmp:
            path = Path(tmp) / PROMOTION_FILE
            path.write_text(json.dumps(promotion, indent=2, sort_keys=True) + "\n")
            client.log_artifact(run_id, str(path))
        if (run_dir / SAMPLES_FILE).exists():
            client.log_artifact(run_id, str(run_dir / SAMPLES_FILE))
    except Exception as exc:
        log.warning("promotion.json and samples.json are not in the MLflow run's artifacts: %s", exc)


def _read(path: Path, task: str | None) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        if task is None:
            return {}
        raise RuntimeError(f"no {path}: {task} must run before promote") from None
