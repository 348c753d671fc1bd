"""validate's model checks (dpo_lib/models/preflight.py): a Hub preset without the Hub, a run that cannot
fit the worker's GPUs (with the numbers and what would fit), and what is never mistaken for the Hub."""

import json
import logging
import socket

import pytest

from dpo_lib.models import preflight
from dpo_lib.models.hub import hub_repo_id
from dpo_lib.models.memory import GIB
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.spec import SpecError
from tests.support.settings_under import settings_under
from tests.unit.models.test_memory import LLAMA3_8B


@pytest.fixture
def settings(tmp_path):
    return settings_under(tmp_path)


def plan(settings, conf):
    return plan_run(conf, dag_id="dpo_finetune", run_id="r", settings=settings)


@pytest.fixture
def closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: connecting is refused at once


def test_a_hub_preset_without_the_hub_fails_in_one_line_suggesting_model_uri(settings, monkeypatch, closed_port):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = plan(settings, {"model": "qwen2.5-0.5b"})
    assert spec.train.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct" and spec.train.max_length == 1024
    with pytest.raises(SpecError) as info:
        preflight.check_model(spec, settings)
    ((field, reason),) = info.value.problems
    assert field == "model" and "\n" not in reason
    assert reason.startswith("the Hugging Face hub is not reachable from here (http://127.0.0.1:")
    assert "pass model_uri=gs://bucket/path/" in reason and "instead of model=qwen2.5-0.5b" in reason


def test_offline_mode_says_so(settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SpecError, match="HF_HUB_OFFLINE is set and the model is not in the local Hugging Face cache"):
        preflight.check_model(plan(settings, {"model": "llama3-8b"}), settings)


def test_local_folders_are_never_taken_for_the_hub(tmp_path):
    assert hub_repo_id("Qwen/Qwen2.5-0.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-0.5B-Instruct"
    assert hub_repo_id("models/tiny", tmp_path) is None  # not built yet: still a folder, not the Hub
    assert hub_repo_id("/abs/model", tmp_path) is None and hub_repo_id("./model", tmp_path) is None
    (tmp_path / "team" / "model").mkdir(parents=True)
    assert hub_repo_id("team/model", tmp_path) is None  # an existing folder wins, as in transformers


def test_a_run_that_cannot_fit_fails_with_the_numbers_and_what_would_fit(settings):
    train = plan(settings, {"overrides": {"max_length": 1024, "max_prompt_length": 512, "batch_size": 2}}).train
    with pytest.raises(SpecError) as info:
        preflight.check_config(LLAMA3_8B, train, field="model_uri", gpus=[80 * GIB])
    ((field, reason),) = info.value.problems
    assert field == "model_uri"
    assert reason.startswith("needs ≈ 173 GiB per GPU for full fine-tuning of 8.03B parameters (weights, gradients")
    assert "this worker has 1 GPU of 80 GiB: use adapter=lora (≈ 48 GiB per GPU)" in reason


def test_fsdp_is_suggested_where_lora_alone_does_not_fit(settings):
    train = plan(settings, {"adapter": "lora", "overrides": {"max_length": 1024, "max_prompt_length": 512}}).train
    with pytest.raises(SpecError, match=r"this worker has 4 GPUs of 24 GiB: use trainer=fsdp and trainer\.activ"):
        preflight.check_config(LLAMA3_8B, train, field="model", gpus=[24 * GIB] * 4)


def test_a_run_that_fits_passes_and_logs_the_estimate(settings, caplog):
    train = plan(settings, {"adapter": "lora", "overrides": {"max_length": 1024, "max_prompt_length": 512}}).train
    with caplog.at_level(logging.INFO, logger="dpo_lib.models.preflight"):
        preflight.check_config(LLAMA3_8B, train, field="model", gpus=[141 * GIB])
    assert "memory: training needs ≈" in caplog.text and "this worker has 1 GPU of 141 GiB" in caplog.text


def test_a_cpu_only_worker_skips_the_memory_check_with_a_log_line(settings, caplog):
    train = plan(settings, {}).train
    with caplog.at_level(logging.INFO, logger="dpo_lib.models.preflight"):
        preflight.check_config(LLAMA3_8B, train, field="model", gpus=[])
    assert "memory check skipped: no GPU visible on this worker" in caplog.text


def test_max_length_beyond_the_models_positions_is_refused(settings, tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({**LLAMA3_8B, "max_position_embeddings": 256}))
    spec = plan(settings, {"model_uri": "m", "overrides": {"max_length": 512}})
    with pytest.raises(SpecError, match=r"overrides.max_length: 512 is more than the model takes \(m: max_position"):
        preflight.check_model(spec, settings, gpus=[])


def test_a_model_uri_without_config_json_is_refused_at_validate(settings, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="model_uri: empty has no config.json: it is not a Hugging Face model folder"):
        preflight.check_model(plan(settings, {"model_uri": "empty"}), settings, gpus=[])
