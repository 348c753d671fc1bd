"""Request bodies for fuzzing the webhook (hypothesis strategies) and an independent statement of which are safe.

Shared by the in-process fuzzing (``test_webhook_fuzz.py``) and the few dozen bodies sent to the live api-server
(``test_service_faults.py``). ``bad_fields`` says which top-level fields a refusal must name without calling the
pipeline's own validation, so the tests check it against a second opinion rather than against itself; and
``bad_overrides`` which overrides a valid request's training config must refuse (the webhook composes it too).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from hypothesis import strategies as st

from dpo_lib.api.webhook import MAX_BODY_BYTES
from dpo_lib.spec import config_options

ROOT = Path("/srv/dpo-webhook-fuzz")  # the local storage root the webhook judges paths against (never touched)
MAX = MAX_BODY_BYTES
KNOWN = {"dataset_uri", "model", "loss", "trainer", "adapter", "exp_name", "overrides"}
GROUPS = ("model", "loss", "trainer", "adapter")  # request fields naming a configs/ preset
EXP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# Set by the pipeline for each run: an override of one is refused with the request, whatever else is wrong.
SET_BY_PIPELINE = {"exp_name", "run_dir", "model.name_or_path", "model.tokenizer_name_or_path"}

# ---- bodies -----------------------------------------------------------------------------------------------------

HOSTILE = [
    "../../etc/passwd", "/etc/passwd", "data/../../x.json", "..", "file:///etc/passwd", "file://host/x.json",
    f"file://{ROOT}/../etc/passwd", f"{ROOT}/ok.json", f"file://{ROOT}/ok.json", f"{ROOT}x/no.json",
    "s3://bucket/key.json", "http://evil.example/x.json", "ftp://h/x.json", "javascript://x", "gs://B/x",
    "gs://bucket/../x.json", "%2e%2e/%2e%2e/etc/passwd", "${oc.env:FIREBASE_CREDENTIALS_JSON}",
    "{{ conn.dpo_firebase.password }}", "$(touch /tmp/pwned)", "a;rm -rf /", "x\ny", "a\x00b", "\ud800", "é", "",
    "exp/name", ".hidden", "-rf", "x" * 2049,
]  # fmt: skip
text = st.sampled_from(HOSTILE) | st.text(max_size=30)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
                      max_leaves=8)  # fmt: skip
override_keys = st.sampled_from(["lr", "max_steps", "loss.beta", "model.name", "run_dir", "datasets.x", "exp_name",
                                 "model", "model.name_or_path", "a.b", "1bad", "../x", ""]) | st.text(max_size=8)  # fmt: skip
requests = st.fixed_dictionaries(
    {},
    optional={
        "dataset_uri": st.sampled_from(["data/small.json", "gs://bucket/prefs.jsonl", f"file://{ROOT}/d.json"]) | text,
        "exp_name": st.sampled_from(["exp", "a.b-c_1"]) | text,
        "model": st.sampled_from(config_options("model")) | text,
        "loss": st.sampled_from(config_options("loss")) | text,
        "trainer": st.sampled_from(config_options("trainer")) | text,
        "adapter": st.sampled_from(config_options("adapter")) | text,
        "overrides": st.dictionaries(override_keys, scalars, max_size=6) | values,
    },
) | st.dictionaries(st.sampled_from(sorted(KNOWN)) | text, values, max_size=5)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["request", "request", "request", "json", "damaged", "bytes", "deep", "large"]))
    if kind == "request":
        return json.dumps(draw(requests)).encode()  # NaN/Infinity and \ud800 escapes included, as JSON allows
    if kind == "json":
        return json.dumps(draw(values)).encode()
    if kind == "damaged":
        raw = json.dumps(draw(requests)).encode()
        at = draw(st.integers(0, len(raw)))
        damage = draw(st.sampled_from([b"", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"}", b'"', b"NaN", b",,"]))
        return raw[:at] + damage + raw[at + draw(st.integers(0, 3)) :]
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        depth = draw(st.integers(1, 40_000))
        return draw(st.sampled_from([
            b"[" * depth + b"]" * depth,
            b'{"overrides": {"lr": ' + b"[" * depth + b"]" * depth + b"}}",
            b'{"x": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}",
            b'{"exp_name": ' + b"[" * depth + b"]" * depth + b"}",
        ]))  # fmt: skip
    size = draw(st.integers(MAX - 40, MAX + 40) | st.integers(MAX, 4 * MAX))
    return draw(st.sampled_from([b'{"exp_name": "' + b"x" * (size - 16) + b'"}', b" " * size, b"[" * size]))


# ---- what is safe, stated independently of the request contract and plan_run ---------------------------------------

NOT_JSON = object()  # what ``parse`` returns for a body that is not JSON


def clean_text(value: str) -> bool:
    return "\x00" not in value and not re.search("[\ud800-\udfff]", value)


def uri_is_safe(uri: Any, root: Path) -> bool:
    """A dataset URI the pipeline may read: gs:// or a local path (plain or file:///) that stays under ``root``."""
    if not isinstance(uri, str) or not 1 <= len(uri) <= 2048 or not clean_text(uri):
        return False
    scheme, sep, rest = uri.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        scheme, rest = "", uri
    scheme = scheme.lower()
    if scheme == "gs":
        bucket, _, name = rest.partition("/")
        return bool(re.fullmatch(r"[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]", bucket)) and ".." not in name.split("/")
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            return False
        rest = unquote("/" + path)
    elif scheme:
        return False
    path = PurePosixPath(rest)
    if ".." in path.parts:
        return False
    return not path.is_absolute() or path == PurePosixPath(root) or path.is_relative_to(PurePosixPath(root))


def bad_fields(conf: dict, root: Path) -> set[str]:
    """The top-level fields of ``conf`` a refusal must name (empty: the request is safe to queue)."""
    bad = {key for key in conf if key not in KNOWN}
    if "dataset_uri" in conf and not uri_is_safe(conf["dataset_uri"], root):
        bad.add("dataset_uri")
    if "exp_name" in conf and not (isinstance(conf["exp_name"], str) and EXP_NAME.fullmatch(conf["exp_name"])):
        bad.add("exp_name")
    for group in GROUPS:
        if group in conf and conf[group] not in config_options(group):
            bad.add(group)
    overrides = conf.get("overrides", {})
    if not isinstance(overrides, dict) or len(overrides) > 64:
        bad.add("overrides")
    else:
        for key, value in overrides.items():
            if (
                not (len(key) <= 128 and OVERRIDE_KEY.fullmatch(key))
                or key in SET_BY_PIPELINE
                or key.split(".")[0] == "datasets"
                or not (value is None or isinstance(value, (str, int, float)))  # bool is an int
                or (isinstance(value, float) and not math.isfinite(value))
                or (isinstance(value, str) and (len(value) > 1024 or not clean_text(value)))
            ):
                bad.add("overrides")
    return bad


def override_is_valid(key: str, value: Any, loss: str) -> bool:
    """Whether the training config takes ``key: value``, for the keys the bodies above send on purpose.

    Any other key is refused: one the config does not have (``a.b``, ``no_such_key``), a preset's name or
    choice (``model``, ``model.name``), or Hydra's own (``hydra.run``). Values are JSON's, checked strictly:
    no booleans for numbers, no floats for integers, no strings for either.
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if key == "lr":
        return number and 0 < value <= 1
    if key == "seed":
        return integer and 0 <= value <= 2**32 - 1
    if key == "max_steps":
        return integer and 1 <= value <= 1_000_000
    if key == "loss.beta":
        return loss != "sft" and number and 0 < value <= 100  # sft has no beta
    return False


def bad_overrides(conf: dict) -> set[str]:
    """The overrides a request that is itself valid (``bad_fields`` empty) is refused for."""
    loss = conf.get("loss", "dpo")
    return {
        f"overrides.{key}"
        for key, value in conf.get("overrides", {}).items()
        if not override_is_valid(key, value, loss)
    }


def parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return NOT_JSON


def conf_is_not_json(body: bytes) -> bool:
    return parse(body) is NOT_JSON


def expected_status(body: bytes, root: Path) -> int:
    """What an authorized caller must get for ``body``: 413, 422 or 202."""
    if len(body) > MAX:
        return 413
    conf = parse(body)
    if conf is NOT_JSON or not isinstance(conf, dict) or bad_fields(conf, root) or bad_overrides(conf):
        return 422
    return 202


def check_refusal(status: int, answer: Any, body: bytes, root: Path) -> None:
    """A refusal is JSON whose ``detail`` says why; a 422 names every bad field in a ``loc`` of its own."""
    detail = answer["detail"]
    assert detail, "a refusal must say why"
    if status != 422:
        assert isinstance(detail, str)
        return
    assert all(item["loc"][0] == "body" and item["msg"].strip() for item in detail), detail
    if any(item["type"] == "json_invalid" for item in detail):
        # Not JSON to the server. A body nested close to Python's recursion limit may parse in one process and
        # not in another (the server parses deeper in its stack): refused either way, it needs no field named.
        assert conf_is_not_json(body) or body.count(b"[") + body.count(b"{") > 500, detail
        return
    conf = parse(body)
    if isinstance(conf, dict):
        named = {".".join(item["loc"][1:]) for item in detail}
        # Only what the body holds is named: its own keys, the request's fields, or the request as a whole.
        holds = {printable(key)[:300] for key in conf} | KNOWN | {"(request)"}
        assert all(any(n == key or n.startswith(key + ".") for key in holds) for n in named), (named, body[:300])
        bad = bad_fields(conf, root)
        for field in bad:  # an unknown key too is named by its own loc
            field = printable(field)[:300]
            assert any(n == field or n.startswith(field + ".") for n in named), (field, named)
        if not bad:  # refused for its training config: named by the override, as the caller wrote it
            assert named & bad_overrides(conf), (named, bad_overrides(conf))


def printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
