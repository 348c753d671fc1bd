"""Session fixtures of the container tests: a Docker daemon and the two images, built offline."""

from __future__ import annotations

import pytest

from tests.support.docker_host import AIRFLOW_IMAGE, TRAINER_IMAGE, OfflineBuilds, docker_daemon


@pytest.fixture(scope="session")
def docker_host(tmp_path_factory):
    with docker_daemon(tmp_path_factory.mktemp("dockerd") / "dockerd.log"):
        yield


@pytest.fixture(scope="session")
def image_builds(docker_host, tmp_path_factory):
    builds = OfflineBuilds({"trainer": TRAINER_IMAGE, "airflow": AIRFLOW_IMAGE}, tmp_path_factory.mktemp("builds"))
    yield builds
    builds.close()


@pytest.fixture(scope="session")
def trainer_image(image_builds) -> str:
    return image_builds.wait("trainer")


@pytest.fixture(scope="session")
def airflow_image(image_builds) -> str:
    return image_builds.wait("airflow")
