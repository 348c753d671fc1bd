"""Hostile and broken input, fuzzed with hypothesis: datasets through validation and trigger payloads through
request validation and planning. Neither ever crashes; each answers with a clear error or lets through only
data that is safe to train on, and a run spec (and the command that reads it) that means exactly what the
request said."""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from dpo_lib.config import ConfigError, compose_config
from dpo_lib.dag.runners import command_args, local_command
from dpo_lib.data import validate_cli
from dpo_lib.data.dataset import open_dataset
from dpo_lib.data.formats import FORMATS
from dpo_lib.data.interface import DatasetError
from dpo_lib.data.toy import make_toy_pairs
from dpo_lib.orchestration.plan import plan_run
from dpo_lib.orchestration.staging import cleanup_staging, stage_dataset
from dpo_lib.settings import Settings
from dpo_lib.spec import FinetuneRequest, Manifest, RunSpec, SpecError

pytestmark = pytest.mark.faults

# Modest and quick: deadlines off (a loaded machine is not a bug), no example database left in the working tree.
FUZZ = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# ---- datasets ---------------------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
roles = st.sampled_from(["user", "assistant", "system", "tool", "developer", "robot", "", "USER"])
messages = st.lists(
    st.fixed_dictionaries({}, optional={"role": roles | json_scalars, "content": st.text(max_size=20) | json_values}),
    max_size=3,
)
fields = st.one_of(st.text(max_size=30), st.just(""), st.just("   "), st.just("\ud800"), json_values, messages,
                   st.just("\n\nHuman: hi\n\nAssistant: hello"), st.just("\n\nHuman: hi\n\nAssistant:"))  # fmt: skip
records = st.one_of(
    st.fixed_dictionaries({}, optional={"prompt": fields, "chosen": fields, "rejected": fields, "extra": json_values}),
    json_values,
)


def as_array(items: list[Any]) -> bytes:
    return json.dumps(items).encode()


def as_lines(items: list[Any]) -> bytes:
    return "\n".join(json.dumps(item) for item in items).encode()


@st.composite
def dataset_bytes(draw: st.DrawFn) -> bytes:
    """A JSON array or JSON Lines of mostly plausible records, then perhaps damaged at the byte level."""
    items = draw(st.lists(records, max_size=6))
    data = draw(st.sampled_from([as_array, as_lines]))(items)
    damage = draw(st.sampled_from(["none", "truncate", "invalid utf-8", "splice", "duplicate keys", "deep"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "invalid utf-8":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf0\x28\x8c"])) + data[at:]
    elif damage == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(max_size=16)) + data[at:]
    elif damage == "duplicate keys":
        record = b'{"prompt": "p", "chosen": "a", "rejected": "b", "chosen": %s}' % json.dumps(draw(fields)).encode()
        data = (b"[%s]" if draw(st.booleans()) else b"%s\n") % record
    elif damage == "deep":
        depth = draw(st.integers(1, 5000))
        data = b"[" + b"[" * depth + b"]" * draw(st.integers(0, depth)) + b"]"
    return data


def is_usable_text(value: Any) -> bool:
    """Non-blank text a tokenizer can take: it encodes to UTF-8 (no unpaired surrogates)."""
    if not isinstance(value, str) or not value.strip():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_usable(value: Any) -> bool:
    """What may reach tokenization: non-blank valid text, or non-empty messages of known roles with such text."""
    if isinstance(value, list):
        return bool(value) and all(
            set(m) == {"role", "content"} and m["role"] in ("system", "developer", "user", "assistant", "tool")
            and is_usable_text(m["content"])
            for m in value
        )  # fmt: skip
    return is_usable_text(value)


def check_validation(data: bytes, format: str | None = None) -> None:
    dataset = open_dataset(lambda: io.BytesIO(data), format)
    report, stats = dataset.validate(), dataset.get_stats()
    json.dumps({**report.to_dict(), "stats": stats.to_dict()})  # what --json prints and XCom carries
    report.format_text()
    stats.format_text()
    assert report.error_count >= len(report.errors) and report.warning_count >= len(report.warnings)
    assert all(issue.message.strip() and issue.location for issue in report.errors + report.warnings)
    if not report.ok:
        assert report.errors
        with pytest.raises(DatasetError) as info:  # what training calls: bad data never loads
            open_dataset(lambda: io.BytesIO(data), format).load()
        assert str(info.value).strip()
        return
    pairs = open_dataset(lambda: io.BytesIO(data), format).load()
    assert len(pairs) == report.record_count == stats.valid_count > 0
    for pair in pairs:
        assert is_usable(pair.prompt) and is_usable(pair.chosen) and is_usable(pair.rejected), pair
        assert pair.chosen != pair.rejected


@settings(FUZZ, max_examples=250)
@given(dataset_bytes(), st.sampled_from([None, *FORMATS]))
@example(b"", None)
@example(b"\xef\xbb\xbf", None)
@example(b"\xff\xfe[\x00]\x00", None)
@example(b'[{"prompt": "p", "chosen": "a", "rejected": "b"}] trailing', None)
@example(b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n' + b'{"a":' * 3000 + b"1" + b"}" * 3000, None)
@example(b'[{"prompt": 1e999, "chosen": 123456789012345678901234567890, "rejected": NaN}]', None)
@example(b'{"prompt": "p", "chosen": "' + b"9" * 5000 + b'", "rejected": ' + b"9" * 5000 + b"}", None)
def test_validation_never_crashes_and_only_clean_pairs_get_through(data, format):
    check_validation(data, format)


@settings(FUZZ, max_examples=200)
@given(st.binary(max_size=200))
def test_random_bytes_are_reported_invalid_not_crashed_on(data):
    check_validation(data)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 200_000 + b"]" * 200_000,
        b'{"prompt": ' + b"[" * 200_000 + b"]" * 200_000 + b"}\n",
        json.dumps([{"prompt": "p" * 3_000_000, "chosen": "a", "rejected": "b"}]).encode(),
        b'{"prompt": "p", "chosen": "a", "rejected": "b"}\n' * 20_000,
        b'{"prompt": "a", "chosen": "c", "prompt": "b", "rejected": "r"}\n' * 2_000,
        json.dumps([{"prompt": "p", "chosen": "x" * 9_000_000, "rejected": "b"}]).encode(),
        json.dumps([{"prompt": "p", "chosen": "ok", "rejected": "ok\u200b"}] * 2_000, ensure_ascii=False).encode(),
        json.dumps(make_toy_pairs(20)).encode("utf-16-le"),
    ],
    ids=[
        "deep-array", "deep-line", "huge-string", "many-duplicates", "repeated-keys", "over-the-size-limit",
        "invisible-differences", "utf-16-without-bom",
    ],
)  # fmt: skip
def test_pathological_datasets_are_answered_quickly_and_clearly(data):
    check_validation(data)


def validate_args(source: str, format: str | None, as_json: bool) -> argparse.Namespace:
    """The validate command's arguments, parsed by its own parser."""
    parser = argparse.ArgumentParser()
    validate_cli.add_arguments(parser)
    return parser.parse_args([source, *(["--format", format] if format else []), *(["--json"] if as_json else [])])


@settings(FUZZ, max_examples=40)
@given(dataset_bytes(), st.sampled_from([None, *FORMATS, "yaml"]), st.booleans())
def test_validate_command_exits_0_1_or_2_with_a_message_never_a_traceback(data, format, as_json):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dataset"
        path.write_bytes(data)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = validate_cli.run(validate_args(str(path), format, as_json))
    assert code in (validate_cli.EXIT_VALID, validate_cli.EXIT_INVALID, validate_cli.EXIT_UNREADABLE)
    if code == validate_cli.EXIT_UNREADABLE:
        assert err.getvalue().startswith(f"error: {path}: ") and "unexpected" not in err.getvalue()
    elif as_json:
        assert json.loads(out.getvalue())["ok"] is (code == validate_cli.EXIT_VALID)
    else:
        assert out.getvalue().startswith(f"{path}: {'valid' if code == validate_cli.EXIT_VALID else 'INVALID'}")


# ---- trigger payloads -------------------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "../../etc/passwd", "/etc/passwd", "..", ".", "data/../../../etc/shadow", "file:///etc/passwd", "file://host/x",
    "s3://bucket/key.json", "http://evil.example/x.json", "https://evil.example/x", "ftp://h/x.json",
    "gs://bucket/../../x.json", "gs://B/x", "%2e%2e/%2e%2e/etc/passwd", "${oc.env:FIREBASE_CREDENTIALS_JSON}",
    "\\${oc.env:HOME}", "${run_dir}", "$(touch /tmp/pwned)", "`touch /tmp/pwned`", "a;rm -rf /", "'; echo x; '",
    "a' b", '"', "\\", "\\'", "x\ny", "a\x00b", "\ud800", "-rf", "--help", "key=value", "[1,2]", "{a: 1}",
    "exp/name", "é", "run id with spaces", "x" * 3000,
]  # fmt: skip
hostile_text = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=40)
# Config strings an override may reach: a pattern (attn_implementation), choices, and a preset's name (refused).
TEXT_KEYS = ["trainer.attn_implementation", "truncation_mode", "trainer.device", "model.name"]
override_keys = st.sampled_from([
    "lr", "max_steps", "loss.beta", "seed", "model.name", "trainer.attn_implementation", "truncation_mode",
    "trainer.device", "run_dir", "datasets.from_uri.uri", "exp_name", "model.name_or_path", "no_such_key",
    "trainer", "loss", "a.b.c", "1bad", "../x", "",
]) | st.text(max_size=12)  # fmt: skip
override_values = st.one_of(json_scalars, hostile_text, st.floats(), st.integers(-(2**70), 2**70), json_values)
trigger_payloads = st.fixed_dictionaries(
    {"dataset_uri": st.sampled_from(["data/prefs.json", "gs://bucket/p.jsonl", "file:///srv/p.json"]) | hostile_text},
    optional={
        "exp_name": st.sampled_from(["exp", "a.b-c_1"]) | hostile_text,
        "model": st.sampled_from(["tiny"]) | hostile_text,
        "loss": st.sampled_from(["dpo", "ipo", "sft"]) | hostile_text,
        "trainer": st.sampled_from(["basic", "fsdp"]) | hostile_text,
        "overrides": st.one_of(
            st.dictionaries(override_keys, override_values, max_size=4),
            st.dictionaries(st.sampled_from(TEXT_KEYS), hostile_text, min_size=1),  # reach the trainer's config
            json_values,
        ),
        "unknown": json_values,
    },
)
run_ids = st.sampled_from(["manual__2026-01-01T00:00:00+00:00", "..", "../../x", "/abs", "a/b"]) | st.text(max_size=30)


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    return Settings(workdir=base, local_storage_root=base / "storage", staging_root=base / "staging",
                    artifacts_root=base / "artifacts", runner="local", python="/opt/py thon/bin/python3")  # fmt: skip


def strictly_inside(path: str, root: Path) -> bool:
    resolved, root = Path(path).resolve(), root.resolve()
    return resolved != root and resolved.is_relative_to(root)


def bash_words(command: str) -> list[str]:
    """How bash splits ``command`` into words (nothing in it runs: its words only become ``$@``)."""
    script = f'set -- {command}; printf "%s\\0" "$@"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True, timeout=10).stdout
    return out.decode("utf-8", "surrogateescape").split("\0")[:-1]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def config_value(cfg: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def written_and_read_back(spec: RunSpec) -> RunSpec:
    """The spec as every later task sees it: written by ``validate``, read from run_spec.json."""
    path = spec.write()
    try:
        return RunSpec.read(path)
    finally:
        path.unlink()


@settings(FUZZ, max_examples=120)
@given(trigger_payloads, run_ids)
@example({"dataset_uri": "data/x.json", "overrides": {"model.name": "${oc.env:FIREBASE_CREDENTIALS_JSON}"}}, "r")
@example({"dataset_uri": "data/x.json", "overrides": {"trainer.attn_implementation": "a\\${x}\\'\\"}}, "r")
@example({"dataset_uri": "data/x.json", "overrides": {"model.name": "$(touch /tmp/pwned) `id` ; | & > <"}}, "r")
@example({"dataset_uri": "x" * 1_000_000, "overrides": {f"k{i}": i for i in range(10_000)}}, "r")
@example({"dataset_uri": "d.json", "overrides": {f"bad key {i}": [i] for i in range(5_000)}}, "r")
def test_requests_are_refused_clearly_or_planned_into_their_own_folders_with_a_faithful_command(roots, conf, run_id):
    try:
        spec = plan_run(conf, dag_id="dpo_finetune", run_id=run_id, settings=roots)
    except SpecError as exc:
        assert exc.problems and str(exc).strip() and len(str(exc)) < 30_000  # clear, and small whatever the body
        event("refused")
        return
    event("planned")
    request = FinetuneRequest.parse(conf, local_root=roots.local_storage_root)
    assert spec.request == request
    assert strictly_inside(spec.staging_dir, roots.staging_root / "dpo_finetune")
    assert strictly_inside(spec.dataset_path, Path(spec.staging_dir))
    assert strictly_inside(str(spec.run_dir), roots.artifacts_root / request.exp_name)
    # train and evaluate run `python -u -m dpo_lib train --spec PATH`: the path is one word, taken literally.
    argv = [roots.python, "-u", "-m", "dpo_lib", "train", "--spec", str(spec.path)]
    command = local_command(roots.python, command_args("train", str(spec.path)))
    assert shlex.split(command) == argv
    assert bash_words(command) == argv  # no word split, glob, expansion or command substitution
    read = written_and_read_back(spec)
    assert read == spec  # what the trainer reads is what was planned
    cfg = read.train.model_dump(mode="json")
    assert cfg["run_dir"] == str(spec.run_dir) and list(cfg["datasets"]) == ["from_uri"]
    assert cfg["datasets"]["from_uri"]["uri"] == spec.dataset_path
    for key, value in request.overrides.items():
        assert config_value(cfg, key) == value, key  # read back literally: no interpolation, no escaping left


@pytest.mark.parametrize("override", ["lr=nan", "loss.beta=inf", "weight_decay=inf", "max_grad_norm=nan"])
def test_non_finite_numbers_are_refused_by_the_training_config(override):
    with pytest.raises(ConfigError, match=rf"{override.split('=')[0]}: .*a finite number"):
        compose_config(["exp_name=x", override])  # the CLI's path; a request is refused before it gets here


tricky_text = st.text(st.sampled_from("\\'\"${}:$`;|&<>()[]=, \nab") | st.characters(), min_size=1, max_size=60).filter(
    lambda text: "\x00" not in text and not any("\ud800" <= c <= "\udfff" for c in text)  # refused, rightly
) | st.from_regex(r"\A[A-Za-z0-9_.:-]{1,40}\Z")  # what attn_implementation takes


@settings(FUZZ, max_examples=40)  # each example composes a config (a fifth of a second)
@given(st.sampled_from(TEXT_KEYS), tricky_text)
@example("trainer.attn_implementation", "${oc.env:DPO_FAULTS_PLANTED}")
@example("trainer.attn_implementation", "a\\b")
@example("trainer.attn_implementation", "\\${x}\\'\\")
@example("trainer.attn_implementation", "kernels-community:flash.attn_3")
@example("model.name", "${oc.env:DPO_FAULTS_PLANTED}")
@example("truncation_mode", "keep_start")
def test_any_text_override_is_refused_naming_it_or_reaches_the_training_config_literally(
    roots, monkeypatch_module, key, text
):
    monkeypatch_module.setenv("DPO_FAULTS_PLANTED", "a value from the worker's environment")
    try:
        spec = plan_run({"overrides": {key: text}}, dag_id="dpo_finetune", run_id="r", settings=roots)
    except SpecError as exc:
        assert [field for field, _ in exc.problems] == [f"overrides.{key}"]
        assert "a value from the worker's environment" not in str(exc)  # never resolved, even to refuse it
        event("refused")
        return
    event("accepted")
    cfg = written_and_read_back(spec).train.model_dump(mode="json")
    assert config_value(cfg, key) == text  # not resolved, not unescaped, not doubled


@settings(FUZZ, max_examples=100)
@given(st.one_of(json_values, st.text(), st.binary(), st.lists(json_values)))
def test_a_request_of_any_shape_is_refused_with_a_spec_error_only(roots, conf):
    with contextlib.suppress(SpecError):
        FinetuneRequest.parse(conf)
    with contextlib.suppress(SpecError):
        plan_run(conf, dag_id="dpo_finetune", run_id="r", settings=roots)


# ---- dataset_uri against the local storage root -----------------------------------------------------------------


@pytest.fixture(scope="module")
def storage_root(tmp_path_factory):
    """A storage root holding data/prefs.json (50 pairs), next to a folder outside it with 30 pairs."""
    base = tmp_path_factory.mktemp("storage")
    root, outside = base / "root", base / "outside"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (root / "data" / "prefs.json").write_text(json.dumps(make_toy_pairs(50)))
    (outside / "prefs.json").write_text(json.dumps(make_toy_pairs(30)))
    (root / "data" / "escape.json").symlink_to(outside / "prefs.json")
    (root / "data" / "escape-dir").symlink_to(outside)
    settings_ = Settings(workdir=root, local_storage_root=root, staging_root=base / "staging",
                         artifacts_root=base / "artifacts", runner="local", python="python3")  # fmt: skip
    return settings_, outside


def stage(uri: str, settings_: Settings) -> Manifest:
    """What ``validate`` and ``stage`` do with ``uri``: judge it on its face, then download and validate it."""
    spec = plan_run({"dataset_uri": uri}, dag_id="dpo_finetune", run_id=f"r{next(RUN_NUMBERS)}", settings=settings_)
    spec.write()
    try:
        return stage_dataset(spec, settings_)
    finally:
        cleanup_staging(spec, settings_)


RUN_NUMBERS = itertools.count()


@pytest.mark.parametrize(
    "uri",
    [
        "../outside/prefs.json", "data/../../outside/prefs.json", "{outside}/prefs.json", "file://{outside}/prefs.json",
        "data/escape.json", "data/escape-dir/prefs.json", "s3://bucket/prefs.json", "http://127.0.0.1:1/prefs.json",
        "ftp://host/prefs.json", "file://remote-host/data/prefs.json", "data/prefs.json\x00.txt",
    ],
)  # fmt: skip
def test_uris_that_leave_the_local_root_are_refused_naming_dataset_uri(storage_root, uri):
    settings_, outside = storage_root
    with pytest.raises(SpecError) as refused:
        stage(uri.format(outside=outside), settings_)
    assert [field for field, _ in refused.value.problems] == ["dataset_uri"]
    if uri.startswith("data/escape"):  # symlinks out of the root: only reading the file can tell
        assert "cannot read the dataset" in str(refused.value)


path_parts = st.sampled_from(["..", ".", "data", "prefs.json", "escape.json", "escape-dir", "outside", "", "%2e%2e"])


@settings(FUZZ, max_examples=100)
@given(st.lists(path_parts, min_size=1, max_size=6), st.sampled_from(["", "/", "file://", "file:///", "{root}/"]))
def test_staging_reads_only_inside_the_local_root(storage_root, parts, prefix):
    settings_, _ = storage_root
    uri = prefix.format(root=settings_.local_storage_root) + "/".join(parts)
    try:
        manifest = stage(uri, settings_)
    except SpecError as exc:
        assert [field for field, _ in exc.problems] == ["dataset_uri"]
        return
    assert manifest.record_count == 50  # the dataset inside the root, never the one outside it
