"""Staging a run's dataset: verified, recorded, scoped to the run, and removed without a trace."""

import hashlib
import json

import pytest
from dpo_lib.orchestration.request import RequestError, plan_run

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import staging
from tests.support.settings_under import settings_under


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prefs.json").write_text(json.dumps(make_toy_pairs(50)))
    return settings_under(tmp_path, python="python3")


def plan(settings, run_id="run-1", uri="data/prefs.json"):
    return plan_run({"dataset_uri": uri, "exp_name": "e"}, dag_id="dpo_finetune", run_id=run_id, settings=settings)


def staged_files(settings):
    return sorted(p for p in settings.staging_root.rglob("*") if p.is_file())


def test_staging_copies_the_dataset_and_records_sha256_and_counts(settings):
    p = plan(settings).to_dict()
    manifest = staging.stage_dataset(p, settings)
    source = settings.workdir / "data" / "prefs.json"
    assert manifest["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert manifest["record_count"] == 50 and manifest["format"] == "json"
    on_disk = json.loads((settings.staging_root / "dpo_finetune" / "run-1" / "manifest.json").read_text())
    assert on_disk == manifest


def test_staging_twice_is_idempotent(settings):
    p = plan(settings).to_dict()
    first = staging.stage_dataset(p, settings)
    second = staging.stage_dataset(p, settings)
    assert first["sha256"] == second["sha256"]
    assert len(staged_files(settings)) == 2  # the dataset and its manifest, no temporaries


def test_failed_staging_leaves_nothing(settings, monkeypatch):
    p = plan(settings).to_dict()
    (settings.workdir / "data" / "prefs.json").write_text("[{]")  # corrupted after validate planned it
    with pytest.raises(RequestError, match="staged copy"):
        staging.stage_dataset(p, settings)
    assert staged_files(settings) == []


def test_cleanup_removes_only_its_own_run(settings):
    a, b = plan(settings, "run-a").to_dict(), plan(settings, "run-b").to_dict()
    staging.stage_dataset(a, settings)
    staging.stage_dataset(b, settings)
    assert staging.cleanup_staging(a, settings) is True
    assert all("run-b" in str(p) for p in staged_files(settings)) and staged_files(settings)
    assert staging.cleanup_staging(a, settings) is False  # a retried cleanup is a no-op


def test_check_dataset_names_record_and_field(settings):
    (settings.workdir / "data" / "bad.json").write_text(json.dumps([{"prompt": "p", "chosen": "x", "rejected": 7}]))
    with pytest.raises(RequestError, match=r"record 0.*rejected|rejected.*record 0"):
        staging.check_dataset("data/bad.json", settings)


def test_check_dataset_refuses_paths_outside_the_storage_root(settings):
    with pytest.raises(RequestError, match="cannot read"):
        staging.check_dataset("../outside.json", settings)
    with pytest.raises(RequestError, match="cannot read"):
        staging.check_dataset("data/missing.json", settings)


def test_check_dataset_lets_a_storage_outage_through_to_be_retried(settings, monkeypatch):
    import dpo_lib.storage
    from dpo_lib.storage import StorageUnavailable

    class Unreachable:
        def open_read(self, uri):
            raise StorageUnavailable(uri, "cannot reach the bucket")

        def close(self):
            pass

    monkeypatch.setattr(dpo_lib.storage, "get_storage", lambda uri, **kwargs: Unreachable())
    with pytest.raises(StorageUnavailable):  # not RequestError: validate retries it
        staging.check_dataset("gs://bucket/prefs.json", settings)
