import stat
from types import SimpleNamespace

from dpo_lib.orchestration.runs import record_dataset, record_run
from dpo_lib.spec import FinetuneRequest


def test_the_run_folder_validate_creates_is_writable_by_its_group(tmp_path) -> None:
    """A trainer container runs as another user of group 0 and must write into the run folder."""
    run_dir = tmp_path / "artifacts" / "exp" / "run-1"
    spec = SimpleNamespace(dag_id="dpo_finetune", run_id="run 1", run_dir=run_dir, request=FinetuneRequest())

    record_run(spec)
    record_dataset(run_dir, {"sha256": "0" * 64}, None)

    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o775
    assert sorted(p.name for p in run_dir.iterdir()) == ["dataset.json", "run.json"]
