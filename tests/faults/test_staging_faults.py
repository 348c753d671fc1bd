"""Staging a dataset from storage that goes away, or whose download is cut off: a clear error, no file a later
step could take for the dataset, and a retry that succeeds with the right bytes once storage is back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from dpo_lib.orchestration.request import plan_run

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import staging
from dpo_lib.settings import Settings
from dpo_lib.storage import FirebaseStorage, StorageError, StorageUnavailable
from tests.faults.cutting_proxy import cutting_proxy
from tests.support.storage_emulator import free_port, storage_emulator

pytestmark = pytest.mark.faults

OBJECT = "prefs/dataset.json"


@pytest.fixture
def dataset_file(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps(make_toy_pairs(200, seed=1), indent=1))
    return path


@pytest.fixture
def settings(tmp_path, monkeypatch):
    for name in ("FIREBASE_CREDENTIALS_JSON", "GOOGLE_APPLICATION_CREDENTIALS", "DPO_FIREBASE_CONN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DPO_STORAGE_TIMEOUT_S", "5")
    monkeypatch.setenv("DPO_STORAGE_RETRY_DEADLINE_S", "0")  # fail at once: Airflow's task retries are the retries
    return Settings(workdir=tmp_path, local_storage_root=tmp_path, staging_root=tmp_path / "staging",
                    artifacts_root=tmp_path / "artifacts", runner="local", python="python3")  # fmt: skip


def upload(emulator, dataset_file) -> str:
    uri = f"gs://{emulator.bucket}/{OBJECT}"
    with FirebaseStorage(emulator.bucket) as storage:
        storage.upload(dataset_file, uri)
    return uri


def plan(settings, uri):
    conf = {"dataset_uri": uri, "exp_name": "faults"}
    return plan_run(conf, dag_id="dpo_finetune", run_id="manual__retry", settings=settings).to_dict()


def staged_files(settings):
    return sorted(p.relative_to(settings.staging_root) for p in settings.staging_root.rglob("*") if p.is_file())


def assert_staged(manifest, settings, dataset_file) -> None:
    expected = hashlib.sha256(dataset_file.read_bytes()).hexdigest()
    assert manifest["sha256"] == expected and manifest["size"] == dataset_file.stat().st_size
    run = Path(manifest["staged_path"])
    assert hashlib.sha256(run.read_bytes()).hexdigest() == expected
    assert [p.name for p in staged_files(settings)] == ["dataset.json", "manifest.json"]


def test_staging_while_storage_is_unreachable_fails_clearly_leaves_nothing_and_the_retry_succeeds(
    settings, dataset_file, monkeypatch
):
    port = free_port()
    with storage_emulator(port=port) as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        uri = upload(emulator, dataset_file)
        run_plan = plan(settings, uri)
    # storage is gone (the emulator stopped; nothing listens on its port)

    with pytest.raises(StorageUnavailable, match=f"{uri}: .*cannot reach {emulator.url}"):
        staging.check_dataset(uri, settings)  # validate: retried by Airflow, not failed as a bad request
    with pytest.raises(StorageUnavailable, match=f"{uri}: .*cannot reach {emulator.url}"):
        staging.stage_dataset(run_plan, settings)
    assert staged_files(settings) == []
    assert not Path(run_plan["staging_dir"]).exists()

    with storage_emulator(port=port) as emulator:  # storage is back, same address, same object
        upload(emulator, dataset_file)
        manifest = staging.stage_dataset(run_plan, settings)  # the task's retry
    assert_staged(manifest, settings, dataset_file)


@pytest.mark.parametrize(
    ("cut", "error", "reason"),
    [
        ("drop", StorageUnavailable, "broke off mid-transfer"),  # transient: Airflow retries the task
        ("short", StorageError, "mismatch"),  # the bytes do not match what storage says the object holds
    ],
    ids=["connection-dropped", "body-short"],
)
def test_a_download_cut_off_mid_way_leaves_no_partial_file_and_the_retry_succeeds(
    settings, dataset_file, monkeypatch, cut, error, reason
):
    with storage_emulator() as emulator, cutting_proxy(emulator.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        uri = upload(emulator, dataset_file)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # staging reads through the proxy
        run_plan = plan(settings, uri)

        proxy.cut = cut
        with pytest.raises(error, match=f"^{uri}: .*{reason}"):
            staging.stage_dataset(run_plan, settings)
        assert proxy.cut_downloads >= 1
        assert staged_files(settings) == []  # neither the dataset nor a temporary part of it

        proxy.cut = None
        manifest = staging.stage_dataset(run_plan, settings)
    assert_staged(manifest, settings, dataset_file)


def test_validation_cut_off_mid_read_is_an_outage_to_retry_not_a_bad_dataset(settings, dataset_file, monkeypatch):
    with storage_emulator() as emulator, cutting_proxy(emulator.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        uri = upload(emulator, dataset_file)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        proxy.cut = "drop"
        with pytest.raises(StorageUnavailable, match="broke off mid-transfer"):  # a RequestError would fail the run
            staging.check_dataset(uri, settings)
        proxy.cut = None
        assert staging.check_dataset(uri, settings)["record_count"] == 200
