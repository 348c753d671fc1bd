"""``python -m dpo_lib.results.summary RUNS``: where a run's results are, in a few lines (the end of ``make demo``).

``RUNS`` is a run folder or a folder of runs (the newest is shown): its folder, its report page on the
api-server, its stored copy and registered version, the champion gate's decision, and how to open MLflow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPORT_BASE = "http://localhost:8080"


def newest_run(path: Path) -> Path | None:
    if (path / "metrics.json").exists():
        return path
    runs = sorted(path.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return runs[-1].parent if runs else None


def lines(run_dir: Path, report_base: str = REPORT_BASE) -> list[str]:
    run, published, promotion, tracking = (_read(run_dir / name) for name in
                                           ("run.json", "publish.json", "promotion.json", "tracking.json"))  # fmt: skip
    out = [f"run folder:  {run_dir.resolve()}"]
    if run.get("dag_id") and run.get("run_id"):
        page = f"/dpo/runs/{quote(run['dag_id'], safe='')}/{quote(run['run_id'], safe='')}"
        out.append(f"report:      {report_base}{page} (on the api-server: make api)")
    if published:
        out.append(f"stored at:   {published['output_uri']} ({published['files']} files, upload.json last)")
        out.append(f"registered:  {published['registered_model_name']} version {published['version']}")
    if promotion:
        out.append(f"promotion:   {promotion['decision']} - {promotion['reason']}")
    if tracking.get("ui_url"):
        out.append(f"MLflow:      {tracking['ui_url']}")
    elif tracking:
        out.append(f"MLflow:      make mlflow, then http://127.0.0.1:5000/#/experiments/{tracking['experiment_id']}"
                   f"/runs/{tracking['run_id']}")  # fmt: skip
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


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
