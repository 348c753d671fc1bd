"""``python -m dpo_lib.results.summary RUNS``: where a run's results are, in a few lines (the end of ``make demo``).

``RUNS`` is a run folder or a folder of runs (the newest is shown): its folder, its report (the file
promote wrote, and the page in the Airflow UI), its stored copy and registered version, the champion gate's decision, and how to open MLflow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import quote

from dpo_lib.io import read_json_or_empty
from dpo_lib.results.report_copy import REPORT_HTML, REPORT_PREFIX

REPORT_BASE = "http://localhost:8080"


def newest_run(path: Path) -> Path | None:
    if (path / "metrics.json").exists():
        return path
    runs = sorted(path.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


def lines(run_dir: Path, report_base: str = REPORT_BASE) -> list[str]:
    run, published, promotion, tracking = (read_json_or_empty(run_dir / name) for name in
                                           ("run.json", "publish.json", "promotion.json", "tracking.json"))  # fmt: skip
    out = [f"run folder:  {run_dir.resolve()}"]
    if (run_dir / REPORT_HTML).exists():
        out.append(f"report file: {(run_dir / REPORT_HTML).resolve()} (open it in a browser, offline)")
    if run.get("dag_id") and run.get("run_id"):
        page = f"/dpo/runs/{quote(run['dag_id'], safe='')}/{quote(run['run_id'], safe='')}"
        out.append(f"report page: {report_base}{page} (in the Airflow UI: make api, then the run's DPO report tab)")
    if published:
        out.append(f"stored at:   {published['output_uri']} ({published['files']} files, upload.json last; "
                   f"the report under {REPORT_PREFIX})")  # fmt: skip
        out.append(f"registered:  {published['registered_model_name']} version {published['version']}")
    if promotion:
        versions = promotion.get("versions") or {}
        against = f", against version {versions['champion']}" if versions.get("champion") else ""
        out.append(f"promotion:   {promotion['decision']} (version {versions.get('challenger')}{against}) - "
                   f"{promotion['reason']}")  # fmt: skip
    if tracking.get("ui_url"):
        out.append(f"MLflow:      {tracking['ui_url']}")
    elif tracking:
        out.append(f"MLflow:      make mlflow, then http://127.0.0.1:5000/#/experiments/{tracking['experiment_id']}"
                   f"/runs/{tracking['run_id']}")  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dpo_lib.results.summary", description=__doc__.split("\n")[0])
    parser.add_argument("runs", type=Path, help="a run folder, or a folder of runs (the newest is shown)")
    args = parser.parse_args(argv)
    run_dir = newest_run(args.runs)
    if run_dir is None:
        print(f"error: no run with metrics.json in {args.runs}", file=sys.stderr)
        return 1
    print("\n".join(lines(run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
