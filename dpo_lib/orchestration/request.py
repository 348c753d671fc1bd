"""A fine-tune request (a DAG run's conf), its JSON Schema, and the run plan built from it.

The same schema backs the DAG's Params (checked by Airflow at trigger time) and the
``validate`` task, so a bad request is refused with the same words everywhere.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from dpo_lib.config import CONFIG_DIR, SCHEMA_DIR, ConfigError, compose_config
from dpo_lib.orchestration.settings import Settings, path_safe

DEFAULT_REQUEST = {
    "dataset_uri": "data/dataset.json",
    "model": "tiny",
    "loss": "dpo",
    "trainer": "basic",
    "exp_name": "dpo",
    "overrides": {},
}

# The pipeline decides these (per run, from the request's own fields); an override must not
# point a run at another run's folders or at arbitrary files on the worker.
RESERVED_KEYS = {"model", "loss", "trainer", "model.name_or_path", "model.tokenizer_name_or_path"}
RESERVED_ROOTS = {"exp_name", "run_dir", "datasets"}
STAGED_SUFFIXES = (".json", ".jsonl", ".ndjson")
MAX_PROBLEMS, MAX_REASON = 50, 300  # what a refusal lists, and how long each reason may be


class RequestError(ValueError):
    """A request that must not reach training; the message says every reason."""


def config_options(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (Path(config_dir) / group).glob("*.yaml"))


@lru_cache(maxsize=1)
def request_schema() -> dict[str, Any]:
    """``configs/schemas/request.schema.json`` with the model/loss/trainer options filled in."""
    schema = json.loads((SCHEMA_DIR / "request.schema.json").read_text())
    for group in ("model", "loss", "trainer"):
        schema["properties"][group]["enum"] = config_options(group)
    return schema


def request_problems(conf: Any, *, local_root: Path | None = None) -> list[tuple[str, str]]:
    """Every ``(field, reason)`` that makes ``conf`` an invalid request, sorted; empty when it is valid.

    ``field`` is a dotted path such as ``exp_name``, ``overrides.lr`` or an unknown key
    (``(request)`` for the whole object), so callers (the ``validate`` task, the webhook) can name it.
    With ``local_root``, a local ``dataset_uri`` must also lie under it, judged from the text alone
    (the ``validate`` task resolves symlinks on the worker).
    """
    from jsonschema import Draft202012Validator

    if not isinstance(conf, dict):
        return [("(request)", f"the request must be a JSON object, not {type(conf).__name__}")]
    request = {**DEFAULT_REQUEST, **conf}
    problems = []
    for error in Draft202012Validator(request_schema()).iter_errors(request):
        path = [str(p) for p in error.absolute_path]
        if error.validator == "additionalProperties" and error.validator_value is False:
            known = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known), key=str):  # one problem per unknown key, named
                problems.append((".".join([*path, str(key)]), f"unknown field; expected one of {', '.join(known)}"))
        else:
            problems.append((".".join(path) or "(request)", error.message))
    # JSON Schema patterns are ECMA-262 regular expressions, whose "$" is the end of the text; Python's
    # (what jsonschema, and so Airflow's Params, run them with) also matches before a final newline.
    properties = request_schema()["properties"]
    exp_name = request.get("exp_name")
    if isinstance(exp_name, str) and _slips_past(properties["exp_name"]["pattern"], exp_name):
        problems.append(("exp_name", f"{exp_name[:100]!r} does not match {properties['exp_name']['pattern']!r}"))
    overrides = request["overrides"] if isinstance(request.get("overrides"), dict) else {}
    key_pattern = properties["overrides"]["propertyNames"]["pattern"]
    for key, value in overrides.items():
        field = f"overrides.{key}"
        if not isinstance(key, str):
            problems.append((field, "override keys must be strings"))
        elif _slips_past(key_pattern, key):
            problems.append(("overrides", f"{key[:100]!r} does not match {key_pattern!r}"))
        elif key in RESERVED_KEYS or key.split(".")[0] in RESERVED_ROOTS:
            problems.append((field, "is set by the pipeline and cannot be overridden"))
        if isinstance(value, float) and not math.isfinite(value):
            problems.append((field, f"{value} is not a finite number"))
        if isinstance(value, str) and (problem := _text_problem(value)):
            problems.append((field, problem))
    for field in ("exp_name", "dataset_uri"):
        if isinstance(request.get(field), str) and (problem := _text_problem(request[field])):
            problems.append((field, problem))
    uri = request.get("dataset_uri")
    if isinstance(uri, str) and uri and not _text_problem(uri):
        problems += _uri_problems(uri, local_root)
    problems = sorted({(_printable(field)[:MAX_REASON], _clip(_printable(reason))) for field, reason in problems})
    if len(problems) > MAX_PROBLEMS:  # a hostile body can hold thousands; the answer stays small
        problems = [*problems[:MAX_PROBLEMS], ("(request)", f"... and {len(problems) - MAX_PROBLEMS} more problems")]
    return problems


def _slips_past(pattern: str, text: str) -> bool:
    """``text`` passes the schema's ``^...$`` pattern only thanks to Python's "$" (a final newline)."""
    return (
        re.search(pattern, text) is not None and re.fullmatch(pattern.removeprefix("^").removesuffix("$"), text) is None
    )


def _printable(text: str) -> str:
    """``text`` with unpaired surrogates (which no UTF-8 answer or log can carry) as ``\\udXXX`` escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clip(text: str) -> str:
    """Schema messages quote the offending value, which may be megabytes long."""
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _uri_problems(uri: str, local_root: Path | None = None) -> list[tuple[str, str]]:
    """What is wrong with ``uri`` on its face, before any storage is asked: another scheme than plain
    paths, file:// and gs://, a malformed URI, a ``..`` segment, a local path outside ``local_root``."""
    from dpo_lib.storage import InvalidURI
    from dpo_lib.storage.uri import SUPPORTED_SCHEMES, parse_uri, scheme_of

    scheme = scheme_of(uri)
    if scheme and scheme not in SUPPORTED_SCHEMES:
        supported = ", ".join(f"{s}://" for s in SUPPORTED_SCHEMES)
        return [("dataset_uri", f"unsupported scheme {scheme!r}; supported: plain paths, {supported}")]
    try:
        parsed = parse_uri(uri)
    except InvalidURI as exc:
        return [("dataset_uri", exc.reason)]
    path = PurePosixPath(parsed.path)
    if ".." in path.parts:
        return [("dataset_uri", "must not contain a '..' segment (a path may not climb out of its root)")]
    if parsed.is_local and local_root is not None and path.is_absolute():
        root = PurePosixPath(Path(local_root).absolute())
        if path != root and not path.is_relative_to(root):
            return [("dataset_uri", f"a local path must lie under the storage root {root}")]
    return []


def _text_problem(value: str) -> str | None:
    """Why ``value`` cannot travel on a command line (NUL, lone surrogates), or None."""
    if "\x00" in value:
        return "must not contain a NUL character"
    if re.search("[\ud800-\udfff]", value):
        return "is not valid Unicode (it holds an unpaired surrogate)"
    return None


def validate_request(conf: dict[str, Any]) -> dict[str, Any]:
    """The request with defaults filled in; :class:`RequestError` naming each bad field otherwise."""
    if problems := request_problems(conf):
        if problems[0][0] == "(request)" and not isinstance(conf, dict):
            raise RequestError(problems[0][1])
        raise RequestError("invalid request:\n" + "\n".join(f"  {field}: {reason}" for field, reason in problems))
    return {**DEFAULT_REQUEST, **conf}


@dataclass(frozen=True)
class RunPlan:
    """Everything the tasks of one run need, decided once by ``validate`` and passed on by XCom."""

    dag_id: str
    run_id: str
    request: dict[str, Any]
    staging_dir: str
    staged_path: str
    run_dir: str
    # Arguments of ``python -m dpo_lib`` (the trainer image's entrypoint): each runner adds its own
    # prefix, so the override list exists once. The *_command strings are the local runner's view.
    train_args: list[str]
    evaluate_args: list[str]
    train_command: str
    evaluate_command: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_run(conf: dict[str, Any], *, dag_id: str, run_id: str, settings: Settings) -> RunPlan:
    """Validate ``conf`` and compose its training config (without touching the data or a GPU)."""
    request = validate_request(conf)
    run_key = path_safe(run_id)
    staging_dir = settings.staging_root / path_safe(dag_id) / run_key
    suffix = PurePosixPath(request["dataset_uri"]).suffix.lower()
    staged_path = staging_dir / f"dataset{suffix if suffix in STAGED_SUFFIXES else '.data'}"
    run_dir = settings.artifacts_root / request["exp_name"] / run_key

    overrides = [
        f"model={request['model']}",
        f"loss={request['loss']}",
        f"trainer={request['trainer']}",
        "datasets=[from_uri]",
        f"datasets.from_uri.uri={hydra_value(str(staged_path))}",
        f"exp_name={request['exp_name']}",
        f"run_dir={hydra_value(str(run_dir))}",
        *(f"{key}={hydra_value(value)}" for key, value in sorted(request["overrides"].items())),
    ]
    try:
        compose_config(overrides)
    except ConfigError as exc:
        raise RequestError(f"invalid training config: {exc}") from None

    train_args = ["train", *overrides]
    evaluate_args = ["evaluate", "--run-dir", str(run_dir)]
    return RunPlan(
        dag_id=dag_id,
        run_id=run_id,
        request=request,
        staging_dir=str(staging_dir),
        staged_path=str(staged_path),
        run_dir=str(run_dir),
        train_args=train_args,
        evaluate_args=evaluate_args,
        train_command=local_command(settings.python, train_args),
        evaluate_command=local_command(settings.python, evaluate_args),
    )


def local_command(python: str, args: list[str]) -> str:
    """``python -u -m dpo_lib ARGS`` as one shell-quoted line (what the local runner executes)."""
    return shlex.join([python, "-u", "-m", "dpo_lib", *args])


def hydra_value(value: Any) -> str:
    """``value`` in Hydra's override grammar, read back as exactly ``value``.

    Strings are single-quoted, so no character is special to Hydra, and ``${`` is escaped, so
    OmegaConf does not resolve it: a request must not interpolate the worker's environment
    (``${oc.env:...}``) or other config keys into the training config.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # OmegaConf: backslashes right before "${" escape it; k of them followed by a literal "${" become 2k + 1.
    text = re.sub(r"(\\*)\$\{", lambda m: "\\" * (2 * len(m.group(1)) + 1) + "${", str(value))
    # Hydra, in a quoted string: backslashes escape only a quote or the string's end; k of them become 2k (+ 1).
    text = re.sub(r"(\\*)'", lambda m: "\\" * (2 * len(m.group(1)) + 1) + "'", text)
    text = re.sub(r"(\\+)\Z", lambda m: "\\" * (2 * len(m.group(1))), text)
    return f"'{text}'"
