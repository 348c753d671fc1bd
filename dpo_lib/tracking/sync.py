"""Make MLflow hold what a run folder holds, in one idempotent pass: ``python -m dpo_lib.tracking.sync RUN_DIR``.

The run is the one ``tracking.json`` names when it is in this store, else a new one (a trainer that never
reached MLflow, or logged to another store: the deployment's store is the one of record). It gets the
params (config.json), the lineage tags, every line of history.jsonl MLflow lacks, and the evaluate
task's held-out metrics; then ``tracking.json`` names it, ``synced`` true. ``evaluate`` runs this at its
end (and never fails for it); ``publish`` runs it before it registers the model, and fails (to retry)
when MLflow cannot be reached.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import threading
from pathlib import Path

from dpo_lib.io import read_json_or_empty
from dpo_lib.tracking.history import HISTORY_FILE, History
from dpo_lib.tracking.lineage import Lineage, flat_params
from dpo_lib.tracking.record import TrackingRecord
from dpo_lib.tracking.target import TrackingTarget, resolve_target, target_for

log = logging.getLogger(__name__)


def sync_run(
    run_dir: str | Path,
    *,
    lineage: Lineage | None = None,
    target: TrackingTarget | None = None,
    extra_tags: dict[str, str] | None = None,
    patient: bool = True,
):
    """Fill MLflow from ``run_dir``; returns the :class:`~dpo_lib.tracking.mlflow_run.MlflowRun` (still open
    for more tags). ``lineage``: the run's, when known (a DAG run's spec knows more than config.json)."""
    from dpo_lib.spec import TrainConfig
    from dpo_lib.tracking.mlflow_run import MlflowRun, make_client

    run_dir = Path(run_dir)
    config = TrainConfig.model_validate({**json.loads((run_dir / "config.json").read_text()), "run_dir": str(run_dir)})
    lineage = lineage or Lineage.of(config)
    target = target or resolve_target()
    client = make_client(target, patient=patient)
    run = MlflowRun.open(client, target, experiment=lineage.exp_name, run_name=run_dir.name,
                         previous=TrackingRecord.read(run_dir))  # fmt: skip
    run.record.write(run_dir)
    run.set_tags({**lineage.tags(), **(extra_tags or {})})
    run.log_params(flat_params(config))
    sent = run.log_events(History(run_dir).read())
    evaluation = read_json_or_empty(run_dir / "metrics.json").get("eval") or {}
    heldout = "n_pairs" in evaluation and run.log_heldout(evaluation)  # evaluate's, not training's last eval
    run.finish()
    run.record = dataclasses.replace(run.record, synced=True)
    run.record.write(run_dir)
    log.info("MLflow run %s (%s) holds %s: %d logged steps sent%s", run.run_id, target.uri, run_dir, sent,
             ", and the held-out metrics" if heldout else "")  # fmt: skip
    return run


def sync_quietly(run_dir: str | Path, timeout_s: float = 60.0) -> bool:
    """:func:`sync_run` to the store the run logged to, for at most ``timeout_s``; never raises (a warning
    says what failed: the run folder keeps everything). Whether MLflow now holds the run. A run trained
    without a tracker (no history.jsonl: ``train()`` called as a function) is left untracked."""
    if not (Path(run_dir) / HISTORY_FILE).exists():
        return False
    done: list[bool] = []

    def attempt() -> None:
        try:
            sync_run(run_dir, target=run_target(run_dir), patient=False)
            done.append(True)
        except Exception as exc:
            log.warning("MLflow was not updated from %s (%s); `python -m dpo_lib.tracking.sync %s` retries",
                        run_dir, " ".join(str(exc).split())[:300], run_dir)  # fmt: skip

    worker = threading.Thread(target=attempt, name="mlflow-sync", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning("MLflow did not answer within %.0f s; %s keeps the run's metrics", timeout_s, run_dir)
    return bool(done)


def run_target(run_dir: str | Path) -> TrackingTarget:
    """The store the run's tracking.json names (where its trainer logged), else the deployment's."""
    record = TrackingRecord.read(run_dir)
    return target_for(record.tracking_uri) if record is not None else resolve_target()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpo_lib.tracking.sync", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder (config.json, history.jsonl)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.run_dir / "config.json").exists():
        print(f"error: {args.run_dir} holds no training run (no config.json)", file=sys.stderr)
        return 2
    run = sync_run(args.run_dir)
    print(json.dumps(dataclasses.asdict(run.record), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
