"""The closing lines of ``make demo``: where the report is, how to open MLflow, and the gate's decision."""

import json

from dpo_lib.results.summary import lines, main


def write(path, data):
    path.write_text(json.dumps(data))


def test_a_judged_run_says_where_its_report_is_how_to_open_mlflow_and_what_was_decided(tmp_path, capsys):
    run = tmp_path / "demo" / "manual__1"
    run.mkdir(parents=True)
    write(run / "metrics.json", {"eval": {"rewards/accuracies": 0.9}})
    write(run / "run.json", {"dag_id": "dpo_finetune", "run_id": "manual__2026-01-01T00:00:00+00:00"})
    write(run / "publish.json", {"output_uri": "/data/runs/demo/manual__1/", "files": 9,
                                 "registered_model_name": "demo", "version": "2"})  # fmt: skip
    write(run / "promotion.json", {"decision": "kept", "reason": "rewards/accuracies 0.9000 against 0.9000: not better",
                                   "versions": {"challenger": "2", "champion": "1"}})  # fmt: skip
    write(run / "tracking.json", {"experiment_id": "3", "run_id": "abc", "ui_url": None})
    (run / "report.html").write_text("<html></html>")

    assert main([str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == lines(run)
    by_name = {line.split(":", 1)[0]: line for line in printed}
    assert str((run / "report.html").resolve()) in by_name["report file"]
    assert by_name["report page"].split()[2] == (
        "http://localhost:8080/dpo/runs/dpo_finetune/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    )
    assert "the report under report/" in by_name["stored at"]
    assert by_name["registered"].endswith("demo version 2")
    assert by_name["promotion"].startswith("promotion:   kept (version 2, against version 1) - rewards/accuracies")
    assert by_name["MLflow"].endswith("make mlflow, then http://127.0.0.1:5000/#/experiments/3/runs/abc")


def test_a_folder_without_a_finished_run_is_an_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "no run with metrics.json" in capsys.readouterr().err
