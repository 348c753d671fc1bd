"""``python -m dpo_lib metrics``: the JSON alone on stdout (it pipes into jq), the path on stderr."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_stdout_is_the_metrics_json_alone_and_the_path_goes_to_stderr(tmp_path):
    run = tmp_path / "exp" / "run1"
    run.mkdir(parents=True)
    metrics = {"eval": {"loss": 0.4, "reference": {"logps/accuracies": 0.5}}, "train": {"step": 20}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    result = subprocess.run([sys.executable, "-m", "dpo_lib", "metrics", str(tmp_path / "exp")], cwd=REPO,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(result.stdout) == metrics
    assert str((run / "metrics.json").resolve()) in result.stderr
