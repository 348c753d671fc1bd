"""Session-wide test environment, and how ``make test`` spreads the modules over pytest-xdist workers.

Airflow reads its configuration when first imported, so the variables that keep the
tests away from ~/airflow (and from the example DAGs) are set here, at collection time.
"""

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Fixtures every suite shares: the tiny model, toy data and training configs; the storage emulator.
pytest_plugins = ["tests.support.training", "tests.support.storage_fixtures"]

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="dpo-tests-airflow-"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
# One OpenMP thread per torch process: the xdist workers, and a run's concurrent tasks, already keep every core
# busy, and threads spinning against each other's processes cost two concurrent runs ≈ 60 % more CPU time
# (docs/architecture.md#tests). Set it to run a test with more.
os.environ.setdefault("OMP_NUM_THREADS", "1")


# `make test` runs pytest-xdist with --dist loadscope, its scopes being the groups below: each runs whole on one
# worker. A module is a group (its module fixtures start services once); the modules below a shared folder are
# one group (the Docker modules: one daemon, one image build). Groups that take minutes start first, longest
# first, so that no worker is left running a long one alone at the end; the other groups keep their collection
# order (--no-loadscope-reorder). xdist's own --dist loadgroup cannot be used: it tags each test's node id with
# its group, which pytest 9 no longer lets a plugin change, so every test would be scheduled on its own.
SHARED_GROUPS = {"tests/system/docker/": "docker"}
LONGEST_FIRST = ("tests/faults/test_service_faults.py", "docker")


def group_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    return next((group for folder, group in SHARED_GROUPS.items() if module.startswith(folder)), module)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadscope`` with :func:`group_of` as the scope."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    groups = {item: group_of(item.nodeid) for item in items}
    slow = {group for item, group in groups.items() if item.get_closest_marker("slow")}

    def start_rank(item: pytest.Item) -> int:
        group = groups[item]
        if group in LONGEST_FIRST:
            return LONGEST_FIRST.index(group)
        return len(LONGEST_FIRST) + (group not in slow)

    items.sort(key=start_rank)  # stable: a group's tests keep their order, and stay together
