"""The images: their pins agree with requirements.txt, and both build offline from the same Dockerfiles."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from tests.support.docker_host import docker, image_user


def pins(path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\[\]-]+)==([^\s;#]+)", line.strip()):
            found[match.group(1).lower()] = match.group(2)
    return found


@pytest.mark.parametrize("image", ["trainer", "airflow"])
def test_image_pins_are_the_projects(image):
    project, own = pins(REPO / "requirements.txt"), pins(REPO / "containers" / image / "requirements.txt")
    assert own, f"containers/{image}/requirements.txt pins nothing"
    assert {name: version for name, version in own.items() if project.get(name) != version} == {}


def test_the_airflow_image_has_no_training_library():
    assert not {"torch", "transformers", "tokenizers", "safetensors"} & set(
        pins(REPO / "containers" / "airflow" / "requirements.txt")
    )


# What each image's code imports beyond Airflow and the training libraries, by the distribution that brings it.
IMAGE_NEEDS = {
    "airflow": {
        "mlflow-skinny": "publish and promote (dpo_lib/results): MLflow's client and registry",
        "apache-airflow-providers-smtp": "the run notifications (dpo_lib/dag/notifiers.py)",
        "matplotlib": "the run report's curves in the api-server (dpo_lib/api/report_plots.py)",
    },
    "trainer": {
        "mlflow-skinny": "the training run's tracker (dpo_lib/tracking)",
        "sqlalchemy": "the embedded MLflow store (SQLite)",
        "alembic": "the embedded MLflow store's schema",
        "peft": "adapter=lora in train, evaluate and compare",
    },
}


@pytest.mark.parametrize("image", sorted(IMAGE_NEEDS))
def test_each_image_installs_what_its_tasks_import(image):
    installed = pins(REPO / "containers" / image / "requirements.txt")
    assert {name: why for name, why in IMAGE_NEEDS[image].items() if name not in installed} == {}


def test_the_images_install_mlflows_client_alone():
    for image in IMAGE_NEEDS:
        assert "mlflow" not in pins(REPO / "containers" / image / "requirements.txt"), f"{image}: mlflow-skinny only"


def test_the_trainer_dockerfile_keeps_its_contract():
    text = (REPO / "containers" / "trainer" / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S*cuda", text, re.M), "the default base is a CUDA PyTorch image"
    assert 'ENTRYPOINT ["python", "-m", "dpo_lib"]' in text
    # Dependencies are installed before the source is copied, so source edits rebuild little.
    assert text.index("pip install") < text.index("COPY dpo_lib/")
    assert re.search(r"^USER \$\{DPO_UID\}:0", text, re.M)


def test_the_build_context_leaves_out_data_models_artifacts_and_virtualenvs():
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in ("/data", "/models", "/artifacts", "/var", ".venv", ".git", ".airflow"):
        assert entry in ignored


@pytest.mark.slow
def test_the_trainer_image_runs_dpo_lib_as_a_non_root_user(trainer_image):
    user, _, _ = image_user(trainer_image).partition(":")
    assert user not in ("", "0", "root")  # the image's configured user (an empty one means root)
    assert docker("run", "--rm", "--entrypoint", "id", trainer_image, "-u").stdout.strip() == user
    # A training process in a running container: test_docker_runner_run.py checks the trainer the docker
    # runner started (its /proc uids), test_trainer_container.py what the files it writes belong to.
    assert "COMMAND" in docker("run", "--rm", trainer_image, "--help").stdout  # the entrypoint: python -m dpo_lib
    config = docker("run", "--rm", trainer_image, "train", "exp_name=x", "--print-config").stdout
    assert '"exp_name": "x"' in config


@pytest.mark.slow
def test_the_airflow_image_runs_airflow_3_3_with_the_dags_and_no_torch(airflow_image):
    assert docker("run", "--rm", airflow_image, "version").stdout.strip().startswith("3.3.")
    assert docker("run", "--rm", "--entrypoint", "id", airflow_image, "-u").stdout.strip() != "0"
    check = (
        "import importlib.util as u, sys; from airflow.dag_processing.dagbag import DagBag; "
        "bag = DagBag(dag_folder='/opt/dpo/dags'); "
        "print(sorted(bag.dags), bag.import_errors, u.find_spec('torch'), 'torch' in sys.modules)"
    )
    out = docker("run", "--rm", "-e", "AIRFLOW_HOME=/tmp/a", "--entrypoint", "python", airflow_image, "-c", check)
    assert out.stdout.strip().endswith("['dpo_finetune', 'dpo_nightly'] {} None False")


@pytest.mark.slow
def test_the_airflow_image_runs_the_validate_and_stage_task_bodies(airflow_image, tmp_path):
    """What the scheduler or worker container runs itself: validate (the run spec), stage a dataset, clean up."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset.json").write_text(
        '[{"prompt": "p1", "chosen": "a", "rejected": "b"}, {"prompt": "p2", "chosen": "c", "rejected": "d"}]'
    )
    tmp_path.chmod(0o755)
    data.chmod(0o755)
    (data / "dataset.json").chmod(0o644)
    code = (
        "from dpo_lib.orchestration import tasks; "
        "spec = tasks.validate({'dataset_uri': 'data/dataset.json'}, dag_id='d', run_id='r'); "
        "print(tasks.stage(spec)['record_count']); tasks.cleanup(spec); print(spec.exists())"
    )
    out = docker("run", "--rm", "-v", f"{data}:/opt/dpo/work/data:ro", "-e", "DPO_STAGING_ROOT=/tmp/staging",
                 "--entrypoint", "python", airflow_image, "-c", code)  # fmt: skip
    assert out.stdout.strip().splitlines()[-2:] == ["2", "False"]
