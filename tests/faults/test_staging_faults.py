"""Staging a dataset from storage that goes away, or whose download is cut off: a clear error, no file a later
step could take for the dataset, and a retry that succeeds with the right bytes once storage is back."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import staging, tasks
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.settings import Settings
from dpo_lib.spec import RunSpec
from dpo_lib.storage import FirebaseStorage, StorageUnavailable, TransferCorrupted
from tests.support.emulator_proxy import emulator_proxy
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
    # The same folders for the task bodies (tasks.stage reads the settings from the environment).
    for name, value in (
        ("DPO_WORKDIR", tmp_path),
        ("DPO_LOCAL_STORAGE_ROOT", tmp_path),
        ("DPO_STAGING_ROOT", tmp_path / "staging"),
        ("DPO_ARTIFACTS_ROOT", tmp_path / "artifacts"),
    ):
        monkeypatch.setenv(name, str(value))  # fmt: skip
    return Settings.from_env()


def upload(emulator, dataset_file) -> str:
    uri = f"gs://{emulator.bucket}/{OBJECT}"
    with FirebaseStorage(emulator.bucket) as storage:
        storage.upload(dataset_file, uri)
    return uri


def plan(settings, uri) -> RunSpec:
    """What the validate task does: the run spec, written into the run's staging folder (no storage read)."""
    conf = {"dataset_uri": uri, "exp_name": "faults"}
    spec = plan_run(conf, dag_id="dpo_finetune", run_id="manual__retry", settings=settings)
    spec.write()
    return spec


def staged_files(settings):
    return sorted(p.relative_to(settings.staging_root) for p in settings.staging_root.rglob("*") if p.is_file())


def assert_staged(manifest, spec, settings, dataset_file) -> None:
    expected = hashlib.sha256(dataset_file.read_bytes()).hexdigest()
    assert manifest.sha256 == expected and manifest.size == dataset_file.stat().st_size
    assert manifest.record_count == 200 and manifest.staged_path == spec.dataset_path
    assert hashlib.sha256(Path(manifest.staged_path).read_bytes()).hexdigest() == expected
    assert sorted(p.name for p in staged_files(settings)) == ["dataset.json", "manifest.json", "run_spec.json"]
    assert spec.staged_train_config().datasets["from_uri"].sha256 == expected  # what train checks the file against


def assert_nothing_staged(settings) -> None:
    """Only the run spec validate wrote: no dataset, no part of one, no manifest for a later task to trust."""
    assert [p.name for p in staged_files(settings)] == ["run_spec.json"]


def test_staging_while_storage_is_unreachable_fails_clearly_leaves_nothing_and_the_retry_succeeds(
    settings, dataset_file, monkeypatch
):
    port = free_port()
    with storage_emulator(port=port) as emulator:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        uri = upload(emulator, dataset_file)
    # storage is gone (the emulator stopped; nothing listens on its port)

    spec = plan(settings, uri)  # validate needs no storage
    with pytest.raises(StorageUnavailable, match=f"{uri}: .*cannot reach {emulator.url}"):
        staging.stage_dataset(spec, settings)  # retried by Airflow, not failed as a bad request
    assert_nothing_staged(settings)

    with storage_emulator(port=port) as emulator:  # storage is back, same address, same object
        upload(emulator, dataset_file)
        manifest = staging.stage_dataset(spec, settings)  # the task's retry
    assert_staged(manifest, spec, settings, dataset_file)


@pytest.mark.parametrize(
    ("cut", "error", "reason"),
    [
        ("drop", StorageUnavailable, "broke off mid-transfer"),  # transient: Airflow retries the task
        ("short", TransferCorrupted, "mismatch"),  # the bytes do not match what storage says the object holds
    ],
    ids=["connection-dropped", "body-short"],
)
def test_a_download_cut_off_mid_way_leaves_no_partial_file_and_the_retry_succeeds(
    settings, dataset_file, monkeypatch, cut, error, reason
):
    with storage_emulator() as emulator, emulator_proxy(emulator.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        uri = upload(emulator, dataset_file)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)  # staging reads through the proxy
        spec = plan(settings, uri)

        proxy.cut = cut
        with pytest.raises(error, match=f"^{uri}: .*{reason}"):  # both retried by Airflow: neither is a SpecError
            staging.stage_dataset(spec, settings)
        assert proxy.cut_downloads >= 1
        assert_nothing_staged(settings)  # neither the dataset nor a temporary part of it

        proxy.cut = None
        manifest = staging.stage_dataset(spec, settings)
    assert_staged(manifest, spec, settings, dataset_file)


def test_the_stage_task_cut_off_mid_read_fails_as_an_outage_to_retry_not_a_bad_dataset(
    settings, dataset_file, monkeypatch
):
    with storage_emulator() as emulator, emulator_proxy(emulator.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.url)
        uri = upload(emulator, dataset_file)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        spec_path = tasks.validate({"dataset_uri": uri, "exp_name": "faults"}, dag_id="dpo_finetune", run_id="r1")
        proxy.cut = "drop"
        # The task body's error, as the DAG's stage task sees it: a SpecError would fail the run without retries.
        with pytest.raises(StorageUnavailable, match="broke off mid-transfer"):
            tasks.stage(spec_path)
        assert_nothing_staged(settings)
        proxy.cut = None
        manifest = tasks.stage(spec_path)
    assert manifest["record_count"] == 200 and manifest["staged_path"] == RunSpec.read(spec_path).dataset_path
