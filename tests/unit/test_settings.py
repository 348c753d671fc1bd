"""Every DPO_* variable is read in dpo_lib/settings.py, and a bad value names its variable."""

import re
import subprocess

import pytest

from dpo_lib.settings import VARIABLES, DockerSettings, NightlySettings, Settings, SettingsError, StorageSettings
from tests.conftest import REPO


def test_no_other_module_reads_a_dpo_variable():
    found = subprocess.run(
        ["git", "grep", "-nE", r"(environ|getenv|env)(\.get)?[\[(]\s*['\"]DPO_", "--", "dpo_lib", "dags", "plugins"],
        cwd=REPO, capture_output=True, text=True,
    ).stdout.splitlines()  # fmt: skip
    reads = [line for line in found if not re.search(r"\]\s*=[^=]", line)]  # setting one for a child is no read
    assert [line for line in reads if not line.startswith("dpo_lib/settings.py:")] == []


def test_every_variable_read_is_declared_with_its_default_and_meaning():
    text = (REPO / "dpo_lib" / "settings.py").read_text()
    read = set(re.findall(r"\"(DPO_[A-Z0-9_]+)\"", text))
    assert read and read <= set(VARIABLES), read - set(VARIABLES)
    assert all(default and meaning for default, meaning in VARIABLES.values())


def test_defaults_live_under_the_workdir(tmp_path):
    settings = Settings.from_env({"DPO_WORKDIR": str(tmp_path)})
    assert settings.staging_root == tmp_path / "var" / "staging"
    assert settings.artifacts_root == tmp_path / "artifacts" / "runs"
    assert settings.local_storage_root == tmp_path and settings.runner == "local"
    assert (settings.max_active_runs, settings.gpu_slots, settings.train_retry_delay_s) == (16, 1, 30.0)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DPO_RUNNER": "kubernetes"}, "DPO_RUNNER"),
        ({"DPO_TRAIN_RETRY_DELAY_S": "soon"}, "DPO_TRAIN_RETRY_DELAY_S"),
        ({"DPO_TRAIN_RETRY_DELAY_S": "-1"}, "DPO_TRAIN_RETRY_DELAY_S"),
        ({"DPO_TRAIN_RETRY_DELAY_S": "nan"}, "DPO_TRAIN_RETRY_DELAY_S"),
        ({"DPO_GPU_SLOTS": "0"}, "DPO_GPU_SLOTS"),
        ({"DPO_MAX_ACTIVE_RUNS": "2.5"}, "DPO_MAX_ACTIVE_RUNS"),
        ({"DPO_TRAIN_TIMEOUT_H": "0"}, "DPO_TRAIN_TIMEOUT_H"),
        ({"DPO_DOCKER_MOUNT_TMP_DIR": "maybe"}, "DPO_DOCKER_MOUNT_TMP_DIR"),
    ],
)
def test_a_bad_value_names_its_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_each_section_reads_its_own_variables():
    assert StorageSettings.from_env({"DPO_STORAGE_TIMEOUT_S": "5", "DPO_FIREBASE_CONN_ID": "c"}).timeout_s == 5.0
    assert DockerSettings.from_env({"DPO_DOCKER_GPUS": "2", "DPO_DOCKER_SECRETS": "A, B"}).secrets == ("A", "B")
    nightly = NightlySettings.from_env({"AIRFLOW_VAR_DPO_NIGHTLY_SCHEDULE": "1 1 * * *", "DPO_NIGHTLY_SCHEDULE": ""})
    assert nightly.schedule == "1 1 * * *" and nightly.dataset_uri == "data/dataset.json"
