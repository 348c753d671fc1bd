"""The same REST end-to-end run with PostgreSQL, the production metadata database, instead of SQLite.

The test setup installs Debian's ``postgresql`` if it is missing, starts a throwaway cluster on
a free loopback port, points ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` at it, and removes it after.
"""

from __future__ import annotations

import pytest
import sqlalchemy

from tests.postgres_server import postgres_server
from tests.serve.services import check_toy_run_through_rest, make_workdir, running_services

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def database_url():
    with postgres_server() as server:  # installs Debian's postgresql first if it is missing
        yield server.url


@pytest.fixture(scope="module")
def services(tmp_path_factory, database_url):
    root = tmp_path_factory.mktemp("serve-postgres")
    work = make_workdir(root / "work")
    with running_services(root, work, {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url}) as running:
        yield running


def test_rest_trigger_runs_the_toy_fine_tune_on_postgresql(services, database_url):
    run_id = check_toy_run_through_rest(services, "rest-postgres", max_steps=10)

    # The run really went through PostgreSQL: its rows are there, and no SQLite file was made.
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = sqlalchemy.text("SELECT state FROM dag_run WHERE dag_id = 'dpo_finetune' AND run_id = :run_id")
            assert connection.execute(query, {"run_id": run_id}).scalar_one() == "success"
    finally:
        engine.dispose()
    assert not (services.home / "airflow.db").exists()
