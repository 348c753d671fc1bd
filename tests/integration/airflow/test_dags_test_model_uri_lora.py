"""End to end on a second architecture: ``airflow dags test dpo_finetune`` trains LoRA adapters on a tiny
Qwen2-style model staged from Firebase Storage (the emulator) by ``model_uri``, on conversational data.

The model (Qwen2ForCausalLM, its own BPE tokenizer, a ChatML chat template) is built here and
uploaded to the emulator; nothing comes from a hub. The emulator sits behind a proxy that counts
each object's downloads, so the second run shows the model came from the model cache: its weights
are not downloaded again.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from tests.support.dags_test import airflow_env as dags_test_env
from tests.support.dags_test import dags_test as run_dags_test
from tests.support.dags_test import migrate
from tests.support.emulator_proxy import emulator_proxy

pytestmark = pytest.mark.slow
MODEL_PREFIX = "models/qwen2-tiny"
DATA_OBJECT = "data/conversations.json"
TRAIN = {"max_steps": 12, "lr": 0.01, "warmup_steps": 2, "eval_every": 0, "checkpoint_every": 0, "log_every": 5}


@pytest.fixture(scope="module")
def proxy(gcs_emulator):
    with emulator_proxy(gcs_emulator.url) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, gcs_emulator, proxy):
    work = tmp_path_factory.mktemp("e2e-qwen2")
    dpo = [sys.executable, "-m", "dpo_lib"]
    model_dir, data = work / "build" / "qwen2-tiny", work / "build" / "conversations.json"
    subprocess.run([*dpo, "make-tiny-model", "--arch", "qwen2", str(model_dir)], check=True, capture_output=True)
    subprocess.run([*dpo, "make-toy-data", "--conversational", "-n", "300", str(data)], check=True,
                   capture_output=True)  # fmt: skip
    with mock.patch.dict(os.environ, gcs_emulator.env):
        from dpo_lib.storage import FirebaseStorage

        with FirebaseStorage(gcs_emulator.bucket) as storage:
            for path in sorted(model_dir.iterdir()):
                storage.upload(path, f"gs://{gcs_emulator.bucket}/{MODEL_PREFIX}/{path.name}")
            storage.upload(data, f"gs://{gcs_emulator.bucket}/{DATA_OBJECT}")
    migrate(airflow_env(work, proxy))
    return work


def airflow_env(work: Path, proxy) -> dict[str, str]:
    return dags_test_env(work, STORAGE_EMULATOR_HOST=proxy.url)  # every storage request goes through the proxy


def dags_test(work: Path, proxy, conf: dict) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = run_dags_test(airflow_env(work, proxy), conf)
    return result, time.monotonic() - started


def model_downloads(proxy) -> dict[str, int]:
    return {
        name.removeprefix(MODEL_PREFIX + "/"): n for name, n in proxy.downloads.items() if name.startswith(MODEL_PREFIX)
    }


def run_files(work: Path) -> list[Path]:
    """What runs left in the staging root besides the model cache."""
    staged = (work / "staging").rglob("*")
    return [p for p in staged if (p.is_file() or p.is_symlink()) and ".model-cache" not in p.parts]


def run_conf(bucket: str, exp_name: str, **train) -> dict:
    return {
        "dataset_uri": f"gs://{bucket}/{DATA_OBJECT}",
        "model_uri": f"gs://{bucket}/{MODEL_PREFIX}/",
        "adapter": "lora",
        "exp_name": exp_name,
        "overrides": {**TRAIN, **train},
    }


def test_lora_on_a_qwen2_model_from_storage_learns_and_the_second_run_uses_the_cache(workdir, gcs_emulator, proxy):
    bucket, model_uri = gcs_emulator.bucket, f"gs://{gcs_emulator.bucket}/{MODEL_PREFIX}/"
    proxy.downloads.clear()
    first, first_s = dags_test(workdir, proxy, run_conf(bucket, "qwen2-lora"))
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-6000:]
    assert "downloaded 6 files" in output  # config, generation config, weights, tokenizer (2), chat template
    cold = model_downloads(proxy)
    assert cold["model.safetensors"] == 1 and set(cold) == {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja",
    }  # fmt: skip

    (metrics_path,) = (workdir / "artifacts" / "qwen2-lora").glob("*/metrics.json")
    metrics = json.loads(metrics_path.read_text())
    print(f"cold run: {first_s:.0f} s, held-out rewards/accuracies {metrics['eval']['rewards/accuracies']:.3f}")
    assert metrics["eval"]["rewards/accuracies"] >= 0.80
    (entry,) = (workdir / "staging" / ".model-cache").iterdir()  # one model, one entry; no temporaries
    config = json.loads((metrics_path.parent / "config.json").read_text())
    assert config["model"]["name_or_path"] == str(entry)  # trained from the cache: it outlives the run's staging
    assert (config["model"]["source_uri"], config["model"]["content_hash"]) == (model_uri, entry.name)
    assert run_files(workdir) == []  # cleanup removed the run's staging folder, link to the model included

    from peft import AutoPeftModelForCausalLM

    final = metrics_path.parent / "final"
    model = AutoPeftModelForCausalLM.from_pretrained(final)  # the adapters on the cached base
    assert type(model.get_base_model()).__name__ == "Qwen2ForCausalLM"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == str(entry)

    proxy.downloads.clear()
    second, second_s = dags_test(workdir, proxy, run_conf(bucket, "qwen2-lora-again", max_steps=2))
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-6000:]
    print(f"warm run: {second_s:.0f} s, model downloads {model_downloads(proxy)}")
    assert "is in the model cache" in output and "nothing downloaded" in output
    warm = model_downloads(proxy)
    assert set(warm) == {"config.json"}  # only validate's read of the config: no weights, no tokenizer files
    assert warm["config.json"] < cold["config.json"]  # stage read it from the cache entry, not from storage
    assert [p.name for p in (workdir / "staging" / ".model-cache").iterdir()] == [entry.name]
