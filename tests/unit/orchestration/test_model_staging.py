"""Choosing a model by model_uri and staging it (dpo_lib/orchestration/plan.py, staging.py and
dpo_lib/models/): refused on its face, staged into the content-keyed cache once, whole or not at all."""

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.models.cache import ModelCache
from dpo_lib.models.stage import stage_model
from dpo_lib.orchestration import staging
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.spec import Manifest, SpecError
from dpo_lib.storage.local import LocalStorage
from tests.support.datasets import expected_cuts, jsonl, record
from tests.support.settings_under import settings_under

MODEL_FILES = {
    "config.json": json.dumps({"model_type": "llama", "max_position_embeddings": 512}),
    "model.safetensors": "weights " * 1000,
    "tokenizer.json": "{}",
    "tokenizer_config.json": "{}",
}


@pytest.fixture
def settings(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prefs.json").write_text(json.dumps(make_toy_pairs(50)))
    write_model(tmp_path / "store" / "m1")
    return settings_under(tmp_path)


def write_model(folder: Path, files: dict[str, str] = MODEL_FILES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def cache_entries(settings) -> list[str]:
    return sorted(p.name for p in settings.model_cache.iterdir()) if settings.model_cache.exists() else []


def plan(settings, conf=None, run_id="run-1"):
    conf = {
        "dataset_uri": "data/prefs.json",
        "model_uri": "store/m1",
        "adapter": "lora",
        "exp_name": "e",
        **(conf or {}),
    }
    spec = plan_run(conf, dag_id="dpo_finetune", run_id=run_id, settings=settings)
    spec.write()
    return spec


def problems(settings, conf):
    with pytest.raises(SpecError) as info:
        plan(settings, conf)
    return info.value.problems


def test_a_model_uri_names_the_staged_copy_and_records_its_source(settings):
    spec = plan(settings, {"model_uri": "gs://bucket-a/models/Qwen2.5-0.5B/"})
    model = spec.train.model
    assert model.name == "Qwen2.5-0.5B" and model.source_uri == "gs://bucket-a/models/Qwen2.5-0.5B/"
    assert model.name_or_path == str(Path(spec.staging_dir) / "model")
    assert spec.request.model == "tiny"  # left at its default


@pytest.mark.parametrize(
    ("conf", "reason"),
    [
        ({"model": "qwen2.5-0.5b"}, "give model or model_uri, not both"),
        ({"model_uri": "gs://goog-models/m/"}, "must not start with 'goog'"),
        ({"model_uri": "gs://Bucket/m/"}, "invalid bucket name"),
        ({"model_uri": "s3://bucket/m/"}, "unsupported scheme 's3'"),
        ({"model_uri": "store/../../etc"}, "'..' segment"),
        ({"model_uri": "/etc/models/m"}, "must lie under the storage root"),
        ({"model_uri": ""}, "at least 1 character"),
    ],
)
def test_a_bad_model_uri_is_refused_naming_the_field(settings, conf, reason):
    ((field, why),) = problems(settings, conf)
    assert field == "model_uri" and reason in why


def test_staging_copies_the_model_into_the_cache_and_links_it(settings):
    spec = plan(settings)
    manifest = staging.stage_inputs(spec, settings)
    model = manifest.model
    entry = settings.model_cache / model.content_hash
    assert (model.uri, model.path, model.files, model.from_cache) == ("store/m1", str(entry), 4, False)
    assert sorted(p.name for p in entry.iterdir()) == [".dpo-source.json", *sorted(MODEL_FILES)]
    assert (entry / "model.safetensors").read_text() == MODEL_FILES["model.safetensors"]
    assert all(not os.access(p, os.W_OK) or os.geteuid() == 0 for p in entry.iterdir())
    assert oct((entry / "config.json").stat().st_mode & 0o777) == "0o444"  # read-only, readable by every user
    assert Path(spec.train.model.name_or_path).resolve() == entry  # the run's link to it
    assert Manifest.read(spec.manifest_path) == manifest
    staged = spec.staged_train_config().model
    assert (staged.name_or_path, staged.content_hash, staged.source_uri) == (str(entry), model.content_hash, "store/m1")


def test_a_second_run_takes_the_model_from_the_cache_without_reading_it_again(settings, monkeypatch, caplog):
    first = staging.stage_inputs(plan(settings, run_id="run-1"), settings).model
    downloads, real_download = [], LocalStorage.download

    def download(self, uri, path):
        downloads.append(uri)
        return real_download(self, uri, path)

    monkeypatch.setattr(LocalStorage, "download", download)
    with caplog.at_level(logging.INFO, logger="dpo_lib.models.stage"):
        second = staging.stage_inputs(plan(settings, run_id="run-2"), settings).model
    assert downloads == ["data/prefs.json"] and second.from_cache and second.path == first.path
    assert (
        f"content {first.content_hash[:12]} is in the model cache" in caplog.text
        and "nothing downloaded" in caplog.text
    )


def test_changed_content_is_a_new_entry(settings):
    first = staging.stage_inputs(plan(settings, run_id="run-1"), settings).model
    (settings.workdir / "store" / "m1" / "model.safetensors").write_text("other weights")
    second = staging.stage_inputs(plan(settings, run_id="run-2"), settings).model
    assert second.content_hash != first.content_hash and not second.from_cache
    assert cache_entries(settings) == sorted([first.content_hash, second.content_hash])


def test_only_the_folders_own_model_files_are_staged(settings):
    folder = settings.workdir / "store" / "m1"
    write_model(folder / "original", {"consolidated.00.pth": "meta's copy"})
    (folder / "pytorch_model.bin").write_text("the same weights again")
    (folder / ".gitattributes").write_text("*")
    model = staging.stage_inputs(plan(settings), settings).model
    assert sorted(p.name for p in Path(model.path).iterdir()) == [".dpo-source.json", *sorted(MODEL_FILES)]


@pytest.mark.parametrize(
    ("removed", "missing"),
    [
        ("model.safetensors", r"no \*\.safetensors weights"),
        ("config.json", "no config.json"),
        ("tokenizer.json", None),
    ],  # fmt: skip
)
def test_a_folder_that_is_not_a_model_is_refused_and_nothing_is_left(settings, removed, missing):
    (settings.workdir / "store" / "m1" / removed).unlink()
    spec = plan(settings)
    if missing is None:  # tokenizer_config.json alone is a tokenizer
        assert staging.stage_inputs(spec, settings).model.files == 3
        return
    with pytest.raises(SpecError, match=rf"model_uri: store/m1 is not a Hugging Face model folder: it has {missing}"):
        staging.stage_inputs(spec, settings)
    assert sorted(p.name for p in Path(spec.staging_dir).iterdir()) == ["run_spec.json"]  # no dataset, no link
    assert cache_entries(settings) == []


def test_runs_staging_the_same_model_at_once_share_one_whole_entry(settings):
    cache, uri = ModelCache(settings.model_cache), "store/m1"
    both_downloading = threading.Barrier(2, timeout=10)
    real_download = LocalStorage.download

    def download(self, src, dest):
        if Path(dest).name == "model.safetensors":
            both_downloading.wait()  # the two runs are in the middle of their copies together
        return real_download(self, src, dest)

    results, errors = [], []

    def stage():
        try:
            results.append(stage_model(uri, cache=cache, local_root=settings.local_storage_root))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalStorage, "download", download)
        threads = [threading.Thread(target=stage) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert {r.path for r in results} == {str(cache.path(results[0].content_hash))}
    assert sorted(r.from_cache for r in results) == [False, True]  # one made it, the other used it
    assert cache_entries(settings) == [results[0].content_hash]  # no temporary left


def test_a_failed_download_leaves_no_entry_and_a_retry_stages_it(settings, monkeypatch):
    spec = plan(settings)
    real_download = LocalStorage.download

    def failing(self, src, dest):
        if Path(dest).name == "tokenizer.json":
            raise OSError("disk went away")
        return real_download(self, src, dest)

    monkeypatch.setattr(LocalStorage, "download", failing)
    with pytest.raises(OSError, match="disk went away"):
        staging.stage_inputs(spec, settings)
    assert cache_entries(settings) == []
    assert sorted(p.name for p in Path(spec.staging_dir).iterdir()) == ["run_spec.json"]
    monkeypatch.setattr(LocalStorage, "download", real_download)
    assert not staging.stage_inputs(spec, settings).model.from_cache


def test_cleanup_removes_the_runs_link_and_keeps_the_cache(settings):
    spec = plan(settings)
    entry = Path(staging.stage_inputs(spec, settings).model.path)
    staging.cleanup_staging(spec, settings)
    assert not Path(spec.staging_dir).exists() and (entry / "model.safetensors").exists()


def test_abandoned_temporary_folders_are_removed_when_old(tmp_path):
    cache = ModelCache(tmp_path)
    old, fresh = tmp_path / ".abc.x.part", tmp_path / ".abc.y.part"
    old.mkdir()
    fresh.mkdir()
    os.utime(old, (0, 0))
    assert cache.remove_abandoned(older_than_s=3600) == [old]
    assert fresh.exists()


def test_staging_records_how_truncation_cuts_the_dataset_with_the_staged_tokenizer(settings, caplog):
    from dpo_lib.tiny_model import build_tokenizer

    folder = settings.workdir / "store" / "with-tokenizer"
    build_tokenizer().save_pretrained(write_model(folder, {k: v for k, v in MODEL_FILES.items() if "token" not in k}))
    rows = make_toy_pairs(40) + [record("Say hi. " * 3000, "Hi!", "No."), record("Be brief.", "Yes. " * 200, "No.")]
    (settings.workdir / "data" / "long.jsonl").write_text(jsonl(rows))
    spec = plan(settings, {"dataset_uri": "data/long.jsonl", "model_uri": "store/with-tokenizer"})
    cuts = expected_cuts(folder, rows, spec.train.max_length, spec.train.max_prompt_length)

    with caplog.at_level(logging.INFO, logger="dpo_lib.orchestration.staging"):
        manifest = staging.stage_inputs(spec, settings)
    truncation = manifest.truncation
    assert truncation is not None and Manifest.read(spec.manifest_path).truncation == truncation
    assert (truncation.pair_count, truncation.truncated_pairs) == (42, sum(1 for cut in cuts if cut))
    assert (truncation.tokens_dropped, truncation.max_tokens_dropped) == (sum(cuts), max(cuts))
    assert f"of 42 pairs ({100 * truncation.truncated_pairs / 42:.2f}%) lose tokens" in caplog.text


def test_a_model_whose_tokenizer_cannot_be_loaded_stages_without_truncation_figures(settings, caplog):
    with caplog.at_level(logging.INFO, logger="dpo_lib.orchestration.staging"):
        manifest = staging.stage_inputs(plan(settings), settings)
    assert manifest.model is not None and manifest.truncation is None
    assert "truncation not measured" in caplog.text


def test_a_worker_without_transformers_skips_truncation_without_a_warning(settings, caplog, monkeypatch):
    import sys

    from dpo_lib.tiny_model import build_tokenizer

    folder = settings.workdir / "store" / "with-tokenizer"
    build_tokenizer().save_pretrained(write_model(folder, {k: v for k, v in MODEL_FILES.items() if "token" not in k}))
    spec = plan(settings, {"model_uri": "store/with-tokenizer"})
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers: ModuleNotFoundError
    with caplog.at_level(logging.INFO, logger="dpo_lib.orchestration.staging"):
        manifest = staging.stage_inputs(spec, settings)
    assert manifest.model is not None and manifest.truncation is None
    (record,) = [r for r in caplog.records if "truncation not measured" in r.getMessage()]
    assert record.levelno == logging.INFO and "no transformers on this worker" in record.getMessage()
