"""The dpo_finetune DAG's shape, its Params, its retries and time limits, and what importing it costs."""

import subprocess
import sys

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamValidationError

from tests.conftest import REPO


@pytest.fixture(scope="module")
def dag():
    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    assert dagbag.import_errors == {}
    return dagbag.dags["dpo_finetune"]


def test_tasks_run_validate_stage_train_evaluate_publish_compare_promote_then_cleanup(dag):
    def downstream(task_id):
        return dag.get_task(task_id).downstream_task_ids

    assert set(dag.task_ids) == {"validate", "stage", "train", "evaluate", "publish", "compare", "promote", "cleanup"}
    # each takes the spec's path
    assert downstream("validate") == {"stage", "train", "evaluate", "publish", "compare", "promote", "cleanup"}
    assert downstream("stage") == {"train", "cleanup"}
    assert downstream("train") == {"evaluate"}
    assert downstream("evaluate") == {"publish"}
    assert downstream("publish") == {"compare"}
    assert downstream("compare") == {"promote"}
    assert downstream("promote") == {"cleanup"}


def test_cleanup_is_the_teardown_of_validate_and_stage(dag):
    cleanup = dag.get_task("cleanup")
    assert cleanup.is_teardown
    assert dag.get_task("validate").is_setup and dag.get_task("stage").is_setup
    assert {"validate", "stage"} <= cleanup.upstream_task_ids
    # Teardowns do not decide the run's state, so a failed train still fails the run.
    assert not cleanup.on_failure_fail_dagrun


def test_cleanup_reads_the_runs_task_states_in_the_dags_order(dag, caplog):
    from dpo_lib.dag.dag_factory import run_task_states

    class TaskInstance:
        @staticmethod
        def get_task_states(dag_id, run_ids):
            assert (dag_id, run_ids) == ("dpo_finetune", ["manual__1"])
            return {"manual__1": {"cleanup": "running", "train": "failed", "stage": "success", "validate": "success"}}

    states = run_task_states({"dag": dag, "run_id": "manual__1", "ti": TaskInstance()})
    assert list(states) == ["validate", "stage", "train", "evaluate", "publish", "compare", "promote", "cleanup"]
    assert (states["train"], states["promote"], states["cleanup"]) == ("failed", None, "running")

    class Unreachable:
        @staticmethod
        def get_task_states(dag_id, run_ids):
            raise ConnectionError("execution API down")

    assert run_task_states({"dag": dag, "run_id": "manual__1", "ti": Unreachable()}) is None
    assert "the run's task states are not available (execution API down)" in caplog.text


def test_train_and_evaluate_take_the_run_spec_from_validate_as_a_value(dag):
    from airflow.sdk.definitions.xcom_arg import XComArg

    for task_id in ("train", "evaluate", "compare"):
        task = dag.get_task(task_id)
        (spec_path,) = task.op_args
        assert isinstance(spec_path, XComArg) and spec_path.operator.task_id == "validate"
        assert "xcom_pull" not in repr(task.op_kwargs) + repr(task.op_args)


def test_the_local_runner_runs_the_spec_through_python_m_dpo_lib(dag):
    import shlex

    train = dag.get_task("train")
    command = shlex.split(train.python_callable("/staging/run/run_spec.json"))
    assert command[1:] == ["-u", "-m", "dpo_lib", "train", "--spec", "/staging/run/run_spec.json"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("exp_name", "../escape"),
        ("exp_name", "a/b"),
        ("exp_name", ""),
        ("dataset_uri", ""),
        ("dataset_uri", 42),
        ("loss", "not-a-loss"),
        ("model", "gpt-17"),
        ("trainer", "quantum"),
        ("overrides", {"bad key!": 1}),
        ("overrides", {"lr": [1, 2]}),
        ("overrides", "lr=1"),
    ],
)
def test_params_refuse_bad_conf(dag, name, value):
    param: Param = dag.params.get_param(name)
    with pytest.raises(ParamValidationError):
        param.resolve(value=value)


def test_params_come_from_the_request_contract(dag):
    from dpo_lib.spec import FinetuneRequest, request_schema

    schema = request_schema()["properties"]
    assert set(dag.params) == set(FinetuneRequest.model_fields) == set(schema)
    for name, param in dag.params.items():
        field = FinetuneRequest.model_fields[name]
        assert param.value == field.get_default(call_default_factory=True)
        assert param.description == field.description == schema[name]["description"]
        assert param.schema.get("enum") == schema[name].get("enum")


def test_params_accept_a_good_conf(dag):
    conf = {"dataset_uri": "gs://bucket/prefs.jsonl", "exp_name": "exp-1.a", "loss": "ipo",
            "overrides": {"lr": 1e-4, "loss.beta": 0.2}}  # fmt: skip
    for name, value in conf.items():
        assert dag.params.get_param(name).resolve(value=value) == value


def test_importing_the_dag_loads_no_training_library_and_is_fast():
    code = (
        "import time, sys, importlib.util\n"
        "import airflow.sdk, airflow.providers.standard.operators.bash, airflow.sdk.exceptions\n"
        "t = time.perf_counter()\n"
        f"spec = importlib.util.spec_from_file_location('dag', {str(REPO / 'dags' / 'dpo_finetune.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "elapsed = time.perf_counter() - t\n"
        "heavy = [m for m in ('torch', 'transformers', 'accelerate', 'peft', 'hydra', 'mlflow') if m in sys.modules]\n"
        "print(elapsed, ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    elapsed, heavy = float(out[0]), out[1] if len(out) > 1 else ""
    assert heavy == ""
    assert elapsed < 1.0


def test_each_task_retries_as_suits_it_and_train_runs_in_the_gpu_pool(dag):
    train = dag.get_task("train")
    assert train.retries >= 2 and train.retry_exponential_backoff > 1  # a float multiplier in Airflow 3
    assert train.pool == "gpu" and train.pool_slots == 1
    stage = dag.get_task("stage")
    assert stage.retries >= 2 and stage.retry_exponential_backoff > 1  # storage outages
    assert dag.get_task("evaluate").retries == 1
    assert dag.get_task("cleanup").retries >= 1
    # validate retries outages but raises AirflowFailException (no retry) for a bad request.
    assert dag.get_task("validate").retries >= 1
    for task in dag.tasks:
        assert task.on_execute_callback and task.on_retry_callback  # each try says what it does in its log


def test_runs_are_capped_and_the_dag_starts_unpaused(dag):
    assert dag.max_active_runs == 16
    assert dag.is_paused_upon_creation is False
    assert dag.catchup is False


def test_every_try_has_a_time_limit_train_s_from_the_settings(dag):
    from datetime import timedelta

    from dpo_lib.dag.dag_factory import task_options
    from tests.support.settings_under import settings_under

    for task in dag.tasks:
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(days=3), task.task_id
    assert dag.get_task("validate").execution_timeout <= timedelta(minutes=10)
    settings = settings_under(REPO, train_timeout_h=5.0, train_retry_delay_s=1.0, task_timeout_min=7.0)
    assert task_options("train", settings)["execution_timeout"] == timedelta(hours=5)
    assert task_options("train", settings)["retry_delay"] == timedelta(seconds=1)  # backoff and cap kept
    assert task_options("train", settings)["retry_exponential_backoff"] == 2.0
    assert task_options("evaluate", settings)["execution_timeout"] == timedelta(minutes=7)


def test_a_refusal_is_one_error_line_and_a_failure_without_retry_or_chained_traceback(caplog):
    import logging

    from airflow.sdk.exceptions import AirflowFailException

    from dpo_lib.dag.dag_factory import refuse
    from dpo_lib.spec import SpecError

    reason = SpecError([("dataset_uri", "gs://prefs/x.json is not a valid preference dataset")], "invalid dataset")
    with caplog.at_level(logging.ERROR, logger="dpo_lib.dag.dag_factory"):
        with pytest.raises(AirflowFailException) as info:
            try:
                raise ValueError("an internal detail")
            except ValueError:
                refuse("stage", reason)
    assert str(info.value) == str(reason)
    assert info.value.__suppress_context__ and info.value.__cause__ is None  # no chained traceback below it
    (record,) = caplog.records
    assert record.getMessage().startswith("stage refused the run; fix the request")
    assert "gs://prefs/x.json is not a valid preference dataset" in record.getMessage()
