"""Kill a run's train task through Airflow, let Airflow's retry finish it, and compare with an uninterrupted run.

Shared by the local runner's test (``tests/faults/test_airflow_retry_resume.py``) and the docker
runner's (``tests/system/docker/test_docker_runner_run.py``): only how the trainer is found and killed differs.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dpo_lib.settings import path_safe
from dpo_lib.spec import SPEC_FILE, RunSpec
from tests.faults.processes import newest_step
from tests.support.airflow_services import RunningServices, state, tail

DAG_ID = "dpo_finetune"
# Airflow retries a failed train after this many seconds instead of 30-60 (dag_factory.task_options).
RETRY_ENV = {"DPO_TRAIN_RETRY_DELAY_S": "1"}
MAX_STEPS = 30
# A checkpoint every step, so the kill lands between two of them (or in the middle of one); logged
# every step, so the metrics of the last step are that step's alone, whichever try computed them.
OVERRIDES = {"max_steps": MAX_STEPS, "checkpoint_every": 1, "keep_checkpoints": 2, "log_every": 1,
             "eval_every": 0, "n_eval_examples": 16}  # fmt: skip
KILL_AFTER_STEP = 2  # the kill comes once this many steps are checkpointed
COMPARED = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected", "grad_norm", "lr", "step")  # fmt: skip
RESUMED = re.compile(r"resuming from checkpoint (\S+)/step-(\d+) at step (\d+)")


def trigger(services: RunningServices, exp_name: str) -> tuple[str, Path]:
    """Trigger the small toy fine-tune; returns its run id and run folder."""
    conf = {"dataset_uri": "data/small.json", "exp_name": exp_name, "overrides": OVERRIDES}
    run_id = services.api().trigger(DAG_ID, conf).dag_run_id
    return run_id, services.artifacts_root / exp_name / path_safe(run_id)


def describe(services: RunningServices, run_id: str) -> str:
    """Every task's state and the tail of each of its tries' logs, for an assertion message."""
    api, parts = services.api(), []
    for ti in api.task_instances(DAG_ID, run_id):
        parts.append(f"== {ti.task_id}: {state(ti)} (try {ti.try_number})")
        for try_number in range(1, (ti.try_number or 0) + 1):
            parts.append(f"-- try {try_number}\n" + api.task_log(DAG_ID, run_id, ti.task_id, try_number)[-2500:])
    return "\n".join(parts) + "\n== services\n" + tail(services.log, 3000)


def wait_until(condition: Callable[[], bool], timeout: float, what: Callable[[], str], interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(interval)


def run_spec(services: RunningServices, run_id: str) -> RunSpec:
    """The run's spec, read from the path validate returned (its XCom), while the run has it (cleanup removes it)."""
    spec_path = services.api().xcom(DAG_ID, run_id, "validate")
    assert spec_path == str(services.staging_root / DAG_ID / path_safe(run_id) / SPEC_FILE), spec_path
    spec = RunSpec.read(spec_path)
    assert spec.run_id == run_id and spec.path == Path(spec_path)
    return spec


def kill_mid_run(
    services: RunningServices, run_id: str, run_dir: Path, kill: Callable[[RunSpec], None]
) -> tuple[int, RunSpec]:
    """Once train has checkpointed ``KILL_AFTER_STEP`` steps, ``kill(spec)`` it; returns the newest complete
    checkpoint's step seen just before the kill (the retry must resume from it or a later one), and the run spec."""
    wait_until(lambda: newest_step(run_dir) >= KILL_AFTER_STEP, 600,
               lambda: "train never checkpointed\n" + describe(services, run_id), interval=0.02)  # fmt: skip
    spec = run_spec(services, run_id)
    assert spec.run_dir == run_dir
    before = newest_step(run_dir)
    kill(spec)
    return before, spec


def check_retry_resumed(services: RunningServices, run_id: str, run_dir: Path, before: int) -> tuple[str, str, int]:
    """The run ends ``success`` after exactly two tries of train, the second resuming from step N > 0.

    Returns both tries' logs and N.
    """
    api = services.api()
    final = api.wait(DAG_ID, run_id, timeout_s=600, poll_s=2)
    assert state(final) == "success", describe(services, run_id)
    tis = {ti.task_id: ti for ti in api.task_instances(DAG_ID, run_id)}
    assert tis["train"].try_number == 2, describe(services, run_id)
    assert {task: state(ti) for task, ti in tis.items()} == dict.fromkeys(tis, "success")

    first, second = (api.task_log(DAG_ID, run_id, "train", n) for n in (1, 2))
    assert "train: try 1 of 3" in first and "train: try 1 of 3 failed" in first, first[-3000:]
    assert "saved the trained policy" not in first, first[-3000:]  # try 1 never got to the end
    assert "train: try 2 of 3" in second and "(a retry:" in second, second[-3000:]
    match = RESUMED.search(second)
    assert match, second[-3000:]
    folder, step, at = match.group(1), int(match.group(2)), int(match.group(3))
    assert folder == str(run_dir / "checkpoints") and step == at
    assert before <= step < MAX_STEPS and step > 0, (before, step)
    assert f"step {MAX_STEPS}/{MAX_STEPS}" in second and "saved the trained policy" in second
    assert f"step 1/{MAX_STEPS}" not in second  # nothing before the checkpoint was trained again
    return first, second, step


def uninterrupted_run(spec: RunSpec, services: RunningServices, reference: Path) -> Path:
    """The run's own training config (its run spec's), uninterrupted, in this process, into ``reference``.

    Only what names files changes: the run folder, the staged dataset (removed by cleanup; the same bytes
    as the work folder's, checked by sha256 when staged) and the model folder (relative to the workdir);
    and it saves no checkpoint but the last (saving reads the state, never changes it), for speed.
    """
    from dpo_lib.training.recipe import train

    train_config = spec.train
    dataset = train_config.datasets["from_uri"]
    assert train_config.run_dir == str(spec.run_dir) and dataset.uri == spec.dataset_path
    train(
        train_config.model_copy(
            update={
                "run_dir": str(reference),
                "datasets": {
                    "from_uri": dataset.model_copy(update={"uri": str(services.work / "data" / "small.json")})
                },
                "model": train_config.model.model_copy(update={"name_or_path": str(services.work / "models" / "tiny")}),
                "checkpoint_every": MAX_STEPS,
            }
        )
    )
    return reference


def assert_same_result(run_dir: Path, reference: Path, tolerance: float) -> None:
    """The final weights and the final training metrics of the two runs agree within ``tolerance``."""
    got_metrics, expected_metrics = (json.loads((d / "metrics.json").read_text()) for d in (run_dir, reference))
    for name in COMPARED:
        assert got_metrics["train"][name] == pytest.approx(
            expected_metrics["train"][name], rel=tolerance, abs=tolerance
        ), name
    got, expected = (load_file(d / "final" / "model.safetensors") for d in (run_dir, reference))
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=tolerance, atol=tolerance, msg=name)
