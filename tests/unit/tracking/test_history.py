"""history.jsonl: strict JSON lines, one per (split, step); a resumed run's later steps and a torn line dropped."""

import json
import math

from dpo_lib.tracking.history import History, make_event


def test_an_event_is_strict_json_with_null_for_what_is_not_a_number(tmp_path):
    history = History(tmp_path)
    history.append(make_event("train", 5, {"loss": 0.5, "grad_norm": math.inf, "lr": math.nan}, at=100.0))
    (line,) = history.path.read_text().splitlines()
    assert json.loads(line) == {"step": 5, "split": "train", "time": 100.0,
                                "metrics": {"loss": 0.5, "grad_norm": None, "lr": None}}  # fmt: skip


def test_keep_until_drops_the_steps_a_resumed_run_logs_again_and_a_torn_line(tmp_path):
    history = History(tmp_path)
    for step in (10, 20, 30):
        history.append(make_event("train", step, {"loss": 1.0 / step}))
    history.append(make_event("eval", 20, {"loss": 0.1}))
    with open(history.path, "a") as fh:
        fh.write('{"step": 40, "split": "tr')  # a kill mid-line
    history.keep_until(20)
    assert [(e["split"], e["step"]) for e in history.read()] == [("train", 10), ("train", 20), ("eval", 20)]
    history.append(make_event("train", 30, {"loss": 9.0}))  # the resumed run: appends land on a clean line
    assert [(e["step"], e["metrics"]["loss"]) for e in history.read() if e["split"] == "train"][-1] == (30, 9.0)


def test_read_keeps_the_last_event_of_a_repeated_step(tmp_path):
    history = History(tmp_path)
    history.append(make_event("train", 10, {"loss": 1.0}))
    history.append(make_event("train", 10, {"loss": 2.0}))
    assert [e["metrics"]["loss"] for e in history.read()] == [2.0]
