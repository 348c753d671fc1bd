"""Staging a run's dataset: downloaded once, validated there, recorded, scoped to the run, removed
without a trace (dpo_lib/orchestration/staging.py)."""

import hashlib
import json

import pytest

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration import staging
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.spec import Manifest, SpecError
from tests.support.settings_under import settings_under


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prefs.json").write_text(json.dumps(make_toy_pairs(50)))
    return settings_under(tmp_path, python="python3")


def plan(settings, run_id="run-1", uri="data/prefs.json"):
    spec = plan_run({"dataset_uri": uri, "exp_name": "e"}, dag_id="dpo_finetune", run_id=run_id, settings=settings)
    spec.write()
    return spec


def staged_files(settings):
    return sorted(p.name for p in settings.staging_root.rglob("*") if p.is_file())


def test_staging_copies_the_dataset_and_records_sha256_and_counts(settings):
    spec = plan(settings)
    manifest = staging.stage_dataset(spec, settings)
    source = settings.workdir / "data" / "prefs.json"
    assert manifest.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert (manifest.record_count, manifest.format) == (50, "json")
    assert Manifest.read(settings.staging_root / "dpo_finetune" / "run-1" / "manifest.json") == manifest


def test_the_trainer_gets_the_staged_digest_and_format(settings):
    spec = plan(settings)
    manifest = staging.stage_dataset(spec, settings)
    dataset = spec.staged_train_config().datasets["from_uri"]
    assert (dataset.uri, dataset.sha256, dataset.format) == (spec.dataset_path, manifest.sha256, "json")


def test_staging_twice_is_idempotent(settings):
    spec = plan(settings)
    first = staging.stage_dataset(spec, settings)
    second = staging.stage_dataset(spec, settings)
    assert first.sha256 == second.sha256
    assert staged_files(settings) == ["dataset.json", "manifest.json", "run_spec.json"]  # no temporaries


def test_a_bad_dataset_fails_staging_naming_record_and_field_and_leaves_no_copy(settings):
    (settings.workdir / "data" / "bad.json").write_text(json.dumps([{"prompt": "p", "chosen": "x", "rejected": 7}]))
    with pytest.raises(SpecError, match=r"record 0.*rejected|rejected.*record 0") as info:
        staging.stage_dataset(plan(settings, uri="data/bad.json"), settings)
    assert info.value.problems[0][0] == "dataset_uri"
    assert staged_files(settings) == ["run_spec.json"]


@pytest.mark.parametrize("count", [0, 1])
def test_a_dataset_too_small_to_hold_out_a_pair_fails_staging(settings, count):
    (settings.workdir / "data" / "small.json").write_text(json.dumps(make_toy_pairs(2)[:count]))
    with pytest.raises(SpecError, match="at least 2: one to train on and one held out|empty|no record"):
        staging.stage_dataset(plan(settings, uri="data/small.json"), settings)
    assert staged_files(settings) == ["run_spec.json"]


def test_unreadable_datasets_fail_staging_naming_the_reason(settings):
    with pytest.raises(SpecError, match="cannot read the dataset"):
        staging.stage_dataset(plan(settings, uri="data/missing.json"), settings)


def test_a_storage_outage_goes_through_to_be_retried(settings, monkeypatch):
    import dpo_lib.storage
    from dpo_lib.storage import StorageUnavailable

    class Unreachable:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def download(self, uri, path):
            raise StorageUnavailable(uri, "cannot reach the bucket")

    monkeypatch.setattr(dpo_lib.storage, "get_storage", lambda uri, **kwargs: Unreachable())
    with pytest.raises(StorageUnavailable):  # not SpecError: the task retries it
        staging.stage_dataset(plan(settings, uri="gs://bucket-a/prefs.json"), settings)


def test_cleanup_removes_only_its_own_run(settings):
    a, b = plan(settings, "run-a"), plan(settings, "run-b")
    staging.stage_dataset(a, settings)
    staging.stage_dataset(b, settings)
    assert staging.cleanup_staging(a, settings) is True
    assert not (settings.staging_root / "dpo_finetune" / "run-a").exists()
    assert staged_files(settings) == ["dataset.json", "manifest.json", "run_spec.json"]
    assert staging.cleanup_staging(a, settings) is False  # a retried cleanup is a no-op
