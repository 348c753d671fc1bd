"""The hostile-input corpus (``hostile_corpus.py``) through the pipeline's front doors: every dataset through the
validate CLI (a subprocess with a time limit and its peak memory read) and through the validate and stage tasks as
the DAG calls them; every request through the webhook's check and the validate task. Nothing hangs, nothing
crashes, memory stays bounded, the webhook and the validate task agree, and nothing the validate CLI accepts is
refused by stage (issue 11)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dpo_lib.api import webhook
from dpo_lib.orchestration import tasks
from dpo_lib.orchestration.names import FINETUNE_DAG_ID
from dpo_lib.spec import RunSpec, SpecError
from tests.faults.hostile_corpus import DATASETS, MODEL_URI, REQUESTS, UNREADABLE, VALID, DatasetCase, RequestCase

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[2]
CASE_SECONDS = 20
VALIDATION_MIB = 200  # the bound on validation's memory, whatever the file

# The CLI as ``python -m dpo_lib`` runs it, writing its own peak resident memory (VmHWM: a fresh process's
# high-water mark; a child's ru_maxrss starts at its parent's) to the file named by the first argument.
CLI_WITH_PEAK = """
import runpy, sys
peak_file, sys.argv = sys.argv[1], ["dpo_lib", *sys.argv[2:]]
try:
    runpy.run_module("dpo_lib", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(peak_file, "w") as out:
        out.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


@dataclass(frozen=True)
class CliResult:
    status: int
    stdout: str
    stderr: str
    peak_mib: float


def run_validate_cli(path: Path, peak_file: Path) -> CliResult:
    argv = [sys.executable, "-c", CLI_WITH_PEAK, str(peak_file), "validate", str(path)]
    try:
        result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=CASE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m dpo_lib validate {path.name} hung (no answer in {CASE_SECONDS} s)")
    return CliResult(result.returncode, result.stdout, result.stderr, int(peak_file.read_text()) / 1024)


@contextlib.contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    """Fail the test if the block takes longer than ``seconds`` (a blocked ``open()`` included)."""

    def expire(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what} took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# What validate reads of a model (its config.json, cheap to read): the tiny model's shape, 512 positions.
MODEL_CONFIG = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512}  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The worker's folders under one directory, as the tasks read them from the environment; a model's
    config.json where the tiny preset looks (``models/tiny``) and at the corpus's ``model_uri``."""
    root = tmp_path_factory.mktemp("hostile-corpus")
    (root / "data").mkdir()
    for folder in (root / "models" / "tiny", root / MODEL_URI):
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(MODEL_CONFIG))
    folders = {"DPO_WORKDIR": root, "DPO_LOCAL_STORAGE_ROOT": root, "DPO_STAGING_ROOT": root / "staging",
               "DPO_ARTIFACTS_ROOT": root / "artifacts", "DPO_MODEL_CACHE": root / "model-cache"}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for name, folder in folders.items():
            patch.setenv(name, str(folder))
        yield root


@pytest.fixture(scope="module")
def dataset_path(root: Path) -> Callable[[DatasetCase], Path]:
    """The case's file under the storage root, written once (big ones are shared by both tests)."""
    written: dict[str, Path] = {}

    def path_of(case: DatasetCase) -> Path:
        if case.name not in written:
            written[case.name] = case.write(root / "data")
        return written[case.name]

    return path_of


def test_the_corpus_holds_forty_datasets_and_forty_requests() -> None:
    assert len(DATASETS) >= 40 and len(REQUESTS) >= 40
    assert len({case.name for case in DATASETS}) == len(DATASETS)
    assert len({case.name for case in REQUESTS}) == len(REQUESTS)


@pytest.mark.parametrize("case", DATASETS, ids=lambda case: case.name)
def test_the_validate_cli_answers_each_dataset_with_its_status_and_a_clear_message(
    root: Path, dataset_path: Callable[[DatasetCase], Path], case: DatasetCase
) -> None:
    result = run_validate_cli(dataset_path(case), root / f"peak-{case.name}")
    output = result.stdout + result.stderr
    assert result.status == case.outcome, output[-2000:]
    assert "Traceback" not in output
    assert case.says in output, output[-2000:]
    if case.outcome == UNREADABLE:  # one line saying why, naming the file
        assert result.stdout == "" and result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: {dataset_path(case)}: ")
    else:  # the report's summary line first, naming the file
        assert result.stdout.startswith(f"{dataset_path(case)}: {'valid' if case.outcome == VALID else 'INVALID'}")
    assert result.peak_mib <= VALIDATION_MIB


@pytest.mark.parametrize("case", DATASETS, ids=lambda case: case.name)
def test_stage_accepts_exactly_the_datasets_the_validate_cli_accepts(
    root: Path, dataset_path: Callable[[DatasetCase], Path], case: DatasetCase
) -> None:
    uri = dataset_path(case).relative_to(root).as_posix()
    run_id = f"corpus-{case.name}"
    with time_limit(CASE_SECONDS, f"validate and stage of {case.name}"):
        spec_path = tasks.validate({"dataset_uri": uri, "exp_name": "corpus"}, dag_id=FINETUNE_DAG_ID, run_id=run_id)
        try:
            manifest = tasks.stage(spec_path)
        except SpecError as exc:
            refusal: SpecError | None = exc
        else:
            refusal = None
        finally:
            tasks.cleanup(spec_path)
    if case.outcome == VALID:
        assert refusal is None
        assert manifest["dataset_uri"] == uri
    else:
        assert refusal is not None, f"stage accepted {case.name}, which the validate CLI refuses"
        assert [field for field, _ in refusal.problems] == ["dataset_uri"]
    assert not (root / "staging" / FINETUNE_DAG_ID / run_id).exists()


def as_the_dag_passes(conf: Any) -> Any:
    """The validate task's request: the run's conf over the DAG's Params (their defaults), as the DAG merges them."""
    from dpo_lib.dag.params import request_params

    if not isinstance(conf, dict):
        return conf
    return {**{name: param.value for name, param in request_params().items()}, **conf}


@pytest.mark.parametrize("case", REQUESTS, ids=lambda case: case.name)
def test_the_webhook_and_the_validate_task_agree_on_each_request(root: Path, case: RequestCase) -> None:
    run_id = f"corpus-{case.name}"
    with time_limit(CASE_SECONDS, f"checking the request {case.name}"):
        webhook_fields = {field for field, _ in webhook._problems(case.conf)}
        try:
            spec_path = tasks.validate(as_the_dag_passes(case.conf), dag_id=FINETUNE_DAG_ID, run_id=run_id)
        except SpecError as exc:
            task_fields, spec_path = {field for field, _ in exc.problems}, None
        else:
            task_fields = set()
    assert webhook_fields == task_fields
    if case.refused is None:
        assert spec_path is not None
        spec = RunSpec.read(spec_path)  # it plans: the spec every later task reads
        assert (spec.run_id, spec.request.dataset_uri) == (run_id, case.conf.get("dataset_uri", "data/dataset.json"))
        tasks.cleanup(spec_path)
    else:
        assert case.refused in webhook_fields
        assert not (root / "staging" / FINETUNE_DAG_ID / run_id).exists()  # a refusal writes nothing
