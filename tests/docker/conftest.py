"""Session fixtures of the container tests: a Docker daemon and the CPU trainer image."""

from __future__ import annotations

import pytest

from tests.docker.docker_host import AIRFLOW_IMAGE, TRAINER_IMAGE, build_offline, docker_daemon


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory):
    with docker_daemon(tmp_path_factory.mktemp("dockerd") / "dockerd.log"):
        yield


@pytest.fixture(scope="session")
def trainer_image(docker_host) -> str:
    return build_offline("trainer", TRAINER_IMAGE)


@pytest.fixture(scope="session")
def airflow_image(docker_host) -> str:
    return build_offline("airflow", AIRFLOW_IMAGE)
