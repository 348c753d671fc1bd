"""The docker runner's operator, as built for a DAG: no Docker daemon needed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from docker.types import DeviceRequest

from dpo_lib.dag.docker_runner import TrainerContainerOperator, device_requests, shm_bytes, trainer_environment
from dpo_lib.dag.runners import command_args, local_command, spec_command_task
from dpo_lib.orchestration.containers import DAG_LABEL, RUN_LABEL, TASK_LABEL, TRY_LABEL, remove_stray_containers
from dpo_lib.settings import DockerSettings, Settings
from tests.support.settings_under import settings_under


def make_settings(tmp_path, **docker) -> Settings:
    return settings_under(tmp_path, runner="docker", docker=DockerSettings(**docker))


def command_task(command: str, settings: Settings, **operator_kwargs) -> TrainerContainerOperator:
    """The operator the runner switch builds for ``command``, on the spec path validate returns (an XComArg)."""
    from airflow.sdk import DAG, task

    with DAG("runner_switch", schedule=None):

        @task
        def validate() -> str:
            return "/staging/run_spec.json"

        return spec_command_task(command, validate(), settings, **operator_kwargs).operator


def mounts_by_target(operator) -> dict[str, dict]:
    return {m["Target"]: m for m in operator.mounts}


def test_the_switch_builds_a_trainer_container_for_the_run_spec(tmp_path):
    from airflow.sdk.definitions.xcom_arg import XComArg

    operator = command_task("train", make_settings(tmp_path), pool="gpu", retries=2)
    assert isinstance(operator, TrainerContainerOperator)
    verb, flag, spec_path = operator.command
    assert (verb, flag) == ("train", "--spec") and isinstance(spec_path, XComArg)  # resolved when the task runs
    assert spec_path.operator.task_id == "validate" and operator.upstream_task_ids == {"validate"}
    assert operator.task_id == "train" and operator.xcom_all is False  # the summary line only, as locally
    assert operator.entrypoint is None  # the image's: python -m dpo_lib
    assert operator.image == "dpo-trainer:latest"
    assert operator.working_dir == str(tmp_path)
    assert operator.pool == "gpu" and operator.retries == 2  # DAG-level options pass through


def test_the_resolved_arguments_are_the_container_command_and_the_local_runners():
    args = command_args("evaluate", "/s/it's a run/run_spec.json")
    assert args == ["evaluate", "--spec", "/s/it's a run/run_spec.json"]
    assert TrainerContainerOperator.format_command(args) == args  # one argument each, no shell between
    assert local_command("/usr/bin/python3", args) == (
        "/usr/bin/python3 -u -m dpo_lib evaluate --spec '/s/it'\"'\"'s a run/run_spec.json'"
    )


def test_staging_and_models_are_read_only_and_artifacts_read_write_at_the_same_paths(tmp_path):
    mounts = mounts_by_target(command_task("train", make_settings(tmp_path)))
    assert set(mounts) == {str(tmp_path / "staging"), str(tmp_path / "artifacts"), str(tmp_path / "models")}
    assert mounts[str(tmp_path / "staging")]["ReadOnly"] is True
    assert mounts[str(tmp_path / "models")]["ReadOnly"] is True
    assert mounts[str(tmp_path / "artifacts")]["ReadOnly"] is False
    for target, mount in mounts.items():
        assert mount["Type"] == "bind" and mount["Source"] == target


def test_the_container_tracks_to_the_workers_mlflow_store(tmp_path):
    settings = make_settings(tmp_path)
    embedded = trainer_environment(settings, {})
    assert embedded == {"PYTHONUNBUFFERED": "1", "DPO_ARTIFACTS_ROOT": str(tmp_path / "artifacts")}
    server = trainer_environment(settings, {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "OTHER": "x"})
    assert server == {**embedded, "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert command_task("train", settings).environment["DPO_ARTIFACTS_ROOT"] == str(tmp_path / "artifacts")


def test_volume_sources_for_airflow_in_a_container(tmp_path):
    settings = make_settings(
        tmp_path, staging_source="dpo-staging", artifacts_source="dpo-artifacts", models_source="/srv/models"
    )
    operator = command_task("train", settings)
    mounts = mounts_by_target(operator)
    assert mounts[str(tmp_path / "staging")]["Type"] == "volume"
    assert mounts[str(tmp_path / "staging")]["Source"] == "dpo-staging"
    assert mounts[str(tmp_path / "artifacts")]["Source"] == "dpo-artifacts"
    assert dict(mounts[str(tmp_path / "models")]) == {
        "Target": str(tmp_path / "models"), "Source": "/srv/models", "Type": "bind", "ReadOnly": True,
    }  # fmt: skip
    assert operator.bind_dirs == ()  # nothing of this machine's is mounted, so nothing to create


@pytest.mark.parametrize(
    ("gpus", "count", "ids"),
    [("all", -1, []), ("2", 2, []), ("device=0,3", 0, ["0", "3"])],
)
def test_gpus_are_device_requests(tmp_path, gpus, count, ids):
    (request,) = command_task("train", make_settings(tmp_path, gpus=gpus)).device_requests
    assert isinstance(request, DeviceRequest)
    assert request["Count"] == count and request["DeviceIDs"] == ids and request["Capabilities"] == [["gpu"]]


def test_by_default_the_trainer_container_gets_every_gpu(tmp_path):
    """``docker run --gpus all``; FSDP without ``trainer.nproc`` then runs one process per GPU it sees
    (``tests/unit/training/test_torchrun.py``)."""
    docker = DockerSettings.from_env({})
    assert docker.gpus == "all"
    operator = command_task("train", settings_under(tmp_path, runner="docker", docker=docker))
    (request,) = operator.device_requests
    assert request["Count"] == -1 and request["DeviceIDs"] == [] and request["Capabilities"] == [["gpu"]]


@pytest.mark.parametrize("gpus", ["0", "none", ""])
def test_a_cpu_container_requests_no_device(gpus):
    assert device_requests(gpus) is None


def test_bad_gpu_and_shm_settings_are_refused():
    with pytest.raises(ValueError, match="DPO_DOCKER_GPUS"):
        device_requests("many")
    with pytest.raises(ValueError, match="DPO_DOCKER_SHM_SIZE"):
        shm_bytes("lots")


def test_shared_memory_auto_remove_and_tmp_dir(tmp_path):
    operator = command_task("train", make_settings(tmp_path, shm_size="16g", mount_tmp_dir=False))
    assert operator.shm_size == 16 * 1024**3
    assert operator.auto_remove == "force"
    assert operator.mount_tmp_dir is False
    assert operator.ulimits == []  # the daemon's defaults unless asked


def test_ulimits_for_nccl_are_opt_in(tmp_path):
    operator = command_task("train", make_settings(tmp_path, ulimits="memlock=-1, stack=67108864:-1"))
    assert [(u["Name"], u["Soft"], u["Hard"]) for u in operator.ulimits] == [
        ("memlock", -1, -1),
        ("stack", 67108864, -1),
    ]
    with pytest.raises(ValueError, match="DPO_DOCKER_ULIMITS"):
        command_task("train", make_settings(tmp_path, ulimits="memlock=lots"))


def test_mount_tmp_dir_is_off_when_airflow_runs_in_a_container(monkeypatch):
    monkeypatch.setattr("dpo_lib.settings.running_in_container", lambda: True)
    assert DockerSettings.from_env({}).mount_tmp_dir is False
    monkeypatch.setattr("dpo_lib.settings.running_in_container", lambda: False)
    assert DockerSettings.from_env({}).mount_tmp_dir is True
    assert DockerSettings.from_env({"DPO_DOCKER_MOUNT_TMP_DIR": "false"}).mount_tmp_dir is False


def test_settings_from_the_environment():
    docker = DockerSettings.from_env(
        {"DPO_DOCKER_IMAGE": "reg/trainer:1", "DPO_DOCKER_GPUS": "4", "DPO_DOCKER_SECRETS": "HF_TOKEN, X_KEY"}
    )
    assert docker.image == "reg/trainer:1" and docker.gpus == "4" and docker.secrets == ("HF_TOKEN", "X_KEY")
    assert DockerSettings.from_env({}).secrets == ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY")


def test_labels_secrets_and_folders_are_prepared_when_the_task_runs(tmp_path):
    operator = command_task("train", make_settings(tmp_path, secrets=("HF_TOKEN", "WANDB_API_KEY")))
    assert operator.labels is None and operator._private_environment == {}  # nothing decided at parse time
    ti = SimpleNamespace(
        dag_id="dpo_finetune", run_id="manual__2026-01-01T00:00:00+00:00", task_id="train", try_number=3
    )
    operator.prepare_container(
        ti, environ={"HF_TOKEN": "hf_secret_value", "AWS_SECRET_ACCESS_KEY": "x", "PATH": "/bin"}
    )

    assert operator.labels == {
        DAG_LABEL: "dpo_finetune", RUN_LABEL: "manual__2026-01-01T00:00:00+00:00", TASK_LABEL: "train", TRY_LABEL: "3",
    }  # fmt: skip
    # Only the named secrets that are set; never templated, so never in the rendered fields.
    assert operator._private_environment == {"HF_TOKEN": "hf_secret_value"}
    assert "hf_secret_value" not in str(operator.environment)
    assert "_private_environment" not in operator.template_fields
    assert (tmp_path / "artifacts").is_dir() and (tmp_path / "staging").is_dir()


def test_on_kill_removes_the_container_at_once(tmp_path, monkeypatch):
    operator = command_task("train", make_settings(tmp_path))
    calls = []
    created = []  # what the daemon has, by label
    fake_cli = SimpleNamespace(
        remove_container=lambda cid, force: calls.append(("remove", cid, force)),
        stop=lambda *a, **k: calls.append(("stop",)),
        containers=lambda all, filters: [c for c in created if set(filters["label"]) <= c["labels"]],
    )
    monkeypatch.setattr(TrainerContainerOperator, "cli", property(lambda self: fake_cli))  # no daemon here
    operator.on_kill()  # not started: nothing to do
    assert calls == []
    operator.prepare_container(SimpleNamespace(dag_id="d", run_id="r", task_id="train", try_number=2), environ={})
    operator.on_kill()  # labelled, but nothing created yet
    assert calls == []
    labels = {f"{key}={value}" for key, value in operator.labels.items()}
    earlier_try = labels - {f"{TRY_LABEL}=2"} | {f"{TRY_LABEL}=1"}
    created += [{"Id": "fedcba9876543210", "labels": labels}, {"Id": "earlier-try", "labels": earlier_try}]
    operator.on_kill()  # killed while Docker was creating it: found by this try's labels
    assert calls == [("remove", "fedcba9876543210", True)]
    calls.clear()
    operator.container = {"Id": "0123456789abcdef"}
    operator.on_kill()
    assert calls == [("remove", "0123456789abcdef", True)]  # no polite stop that outlasts the kill


def test_stray_containers_of_the_run_are_removed_by_label():
    removed = []

    class Container:
        def __init__(self, cid):
            self.id, self.short_id, self.labels = cid, cid[:4], {TASK_LABEL: "train"}

        def remove(self, force):
            removed.append((self.id, force))

    seen_filters = []

    def list_containers(all, filters):
        seen_filters.append((all, filters))
        return [Container("c1-long-id"), Container("c2-long-id")]

    client = SimpleNamespace(containers=SimpleNamespace(list=list_containers))
    assert remove_stray_containers("dag", "run-1", client=client) == ["c1-long-id", "c2-long-id"]
    assert removed == [("c1-long-id", True), ("c2-long-id", True)]
    assert seen_filters == [(True, {"label": [f"{DAG_LABEL}=dag", f"{RUN_LABEL}=run-1"]})]
