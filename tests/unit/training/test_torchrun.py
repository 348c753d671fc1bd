"""How many processes ``python -m dpo_lib train trainer=fsdp`` starts (dpo_lib/training/torchrun.py), without GPUs.

In the trainer container the docker runner asks for every GPU (``DPO_DOCKER_GPUS=all``,
``tests/system/docker/test_docker_operator.py``); FSDP without ``trainer.nproc`` then runs one
process per GPU the container sees.
"""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import pytest
import torch

from dpo_lib.config import compose_config
from dpo_lib.training import torchrun


@pytest.fixture
def gpus(monkeypatch):
    """``gpus(n)``: pretend ``n`` CUDA devices are visible."""

    monkeypatch.delenv("LOCAL_RANK", raising=False)  # as when Airflow or the container starts it

    def visible(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return visible


@pytest.mark.parametrize("strategy", ["fsdp", "tensor_parallel"])
def test_a_multi_process_strategy_without_nproc_runs_one_process_per_visible_gpu(gpus, strategy):
    trainer = compose_config(["exp_name=x", f"trainer={strategy}"]).trainer
    assert trainer.nproc is None and trainer.device == "auto"  # the defaults
    for count in (1, 4, 8):
        gpus(count)
        assert torchrun.process_count(trainer) == count


def test_nproc_or_a_cpu_device_override_the_gpu_count(gpus):
    gpus(8)
    assert torchrun.process_count(compose_config(["exp_name=x", "trainer=fsdp", "trainer.nproc=3"]).trainer) == 3
    cpu = compose_config(["exp_name=x", "trainer=fsdp", "trainer.device=cpu"]).trainer
    assert torchrun.process_count(cpu) == 2  # gloo processes on the CPU
    gpus(0)
    assert torchrun.process_count(compose_config(["exp_name=x", "trainer=fsdp"]).trainer) == 2


def test_the_launcher_starts_torchrun_with_one_process_per_gpu(gpus, monkeypatch):
    gpus(4)
    started = []

    def popen(command, **kwargs):
        started.append(command)
        return SimpleNamespace(wait=lambda: 0, poll=lambda: 0)

    monkeypatch.setattr(subprocess, "Popen", popen)
    config = compose_config(["exp_name=x", "trainer=fsdp"])
    assert config.needs_torchrun
    assert torchrun.relaunch(config.trainer, ["exp_name=x", "trainer=fsdp"]) == 0
    ((*_, run, standalone, addr, nproc, m, module, command, arg1, arg2),) = started
    assert (run, standalone, nproc) == ("torch.distributed.run", "--standalone", "--nproc_per_node=4")
    assert addr == "--local-addr=127.0.0.1"  # not the host name: it does not resolve without a network
    assert (m, module, command, arg1, arg2) == ("-m", "dpo_lib", "train", "exp_name=x", "trainer=fsdp")


def test_basic_runs_in_this_process():
    assert not compose_config(["exp_name=x"]).needs_torchrun
