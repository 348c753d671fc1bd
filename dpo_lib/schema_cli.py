"""``python -m dpo_lib schema``: the run contract as JSON Schemas and Markdown tables, generated from
:mod:`dpo_lib.spec` (and the settings from :mod:`dpo_lib.settings`).

``--check`` (what the tests run) fails when a committed copy differs; ``--write`` regenerates them:
``configs/schemas/*.schema.json`` and the tables between ``<!-- generated: NAME -->`` and
``<!-- end: NAME -->`` markers in README.md and docs/configuration.md.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from dpo_lib.settings import PROJECT_DIR, VARIABLES
from dpo_lib.spec import (
    ADAPTER_CONFIGS,
    LOSS_CONFIGS,
    TRAINER_CONFIGS,
    FinetuneRequest,
    TrainConfig,
    config_options,
    json_schema,
    request_schema,
)

DOCS = ("README.md", "docs/configuration.md")


def schema_files(root: Path = PROJECT_DIR) -> dict[Path, str]:
    """The JSON Schema files and their generated text."""
    directory = root / "configs" / "schemas"
    return {
        directory / "request.schema.json": _dumps(request_schema(root / "configs")),
        directory / "config.schema.json": _dumps(json_schema(TrainConfig)),
    }


def tables() -> dict[str, str]:
    """The generated Markdown tables, by marker name."""
    return {"request": request_table(), "config": config_table(), "settings": settings_table()}


def request_table() -> str:
    rows = [("field", "default", "meaning")]
    for name, field in FinetuneRequest.model_fields.items():
        meaning = field.description or ""
        if name in ("model", "loss", "trainer", "adapter"):
            meaning += f" (presets: {', '.join(config_options(name))})"
        rows.append((f"`{name}`", _default(field), meaning))
    return _markdown(rows)


def config_table() -> str:
    rows = [("key", "default", "bounds", "meaning")]
    for name, field in TrainConfig.model_fields.items():
        if name in ("model", "loss", "trainer", "adapter", "datasets"):
            continue
        rows.append((f"`{name}`", _default(field), _bounds(field), field.description or ""))
    rows += _group_rows("model", [TrainConfig.model_fields["model"].annotation])
    rows += _group_rows("loss", LOSS_CONFIGS)
    rows += _group_rows("trainer", TRAINER_CONFIGS)
    rows += _group_rows("adapter", ADAPTER_CONFIGS)
    dataset_type = get_args(TrainConfig.model_fields["datasets"].annotation)[1]
    rows += _group_rows("datasets.<name>", [dataset_type])
    return _markdown(rows)


def settings_table() -> str:
    rows = [("variable", "default", "meaning")]
    rows += [(f"`{name}`", default, meaning) for name, (default, meaning) in VARIABLES.items()]
    return _markdown(rows)


def _group_rows(prefix: str, models: Any) -> list[tuple[str, ...]]:
    rows: dict[str, list[Any]] = {}
    for model in models:
        variant = model.model_fields["name"].default if "name" in model.model_fields and prefix != "model" else None
        for name, field in model.model_fields.items():
            if name == "name" and variant is not None:
                continue
            key = f"`{prefix}.{name}`"
            if key in rows:
                if variant and variant not in rows[key][0]:
                    rows[key][0].append(variant)
                continue
            rows[key] = [[variant] if variant else [], field]
    out = []
    for key, (variants, field) in rows.items():
        scope = f" ({', '.join(variants)})" if variants and len(variants) < len(models) else ""
        out.append((key, _default(field), _bounds(field), (field.description or "") + scope))
    return out


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        value = value.model_dump().get("name")
    return f"`{json.dumps(value)}`"


def _bounds(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for attr, symbol in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            if (value := getattr(item, attr, None)) is not None:
                parts.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value:,}")
    choices = [a for a in get_args(field.annotation) if isinstance(a, str | bool)]
    if not parts and choices:
        parts.append(" / ".join(json.dumps(c).strip('"') for c in choices))
    return ", ".join(parts)


def _markdown(rows: list[tuple[str, ...]]) -> str:
    escaped = [tuple(cell.replace("|", "\\|") for cell in row) for row in rows]
    lines = ["| " + " | ".join(escaped[0]) + " |", "|" + "---|" * len(escaped[0])]
    lines += ["| " + " | ".join(row) + " |" for row in escaped[1:]]
    return "\n".join(lines)


def rendered_docs(root: Path = PROJECT_DIR) -> dict[Path, str]:
    """Each document that holds generated tables, with the tables regenerated."""
    generated, out = tables(), {}
    for name in DOCS:
        path = root / name
        if not path.exists():
            continue
        text = path.read_text()
        for marker, table in generated.items():
            pattern = re.compile(rf"(<!-- generated: {marker} -->\n)(?:.*?\n)?(<!-- end: {marker} -->)", re.DOTALL)
            text = pattern.sub(lambda m, table=table: f"{m.group(1)}{table}\n{m.group(2)}", text)
        out[path] = text
    return out


def outdated(root: Path = PROJECT_DIR) -> list[Path]:
    """Files whose committed text differs from what the contract generates."""
    wanted = {**schema_files(root), **rendered_docs(root)}
    return [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="regenerate the schema files and doc tables")
    action.add_argument("--check", action="store_true", help="exit 1 when a generated file is out of date")
    parser.add_argument("--which", choices=["request", "config"], default="request", help="the schema to print")


def run(args: argparse.Namespace) -> int:
    if args.write:
        for path, text in {**schema_files(), **rendered_docs()}.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(PROJECT_DIR)}")
        return 0
    if args.check:
        stale = outdated()
        for path in stale:
            print(f"out of date: {path.relative_to(PROJECT_DIR)} (run `python -m dpo_lib schema --write`)")
        return 1 if stale else 0
    print(_dumps(request_schema() if args.which == "request" else json_schema(TrainConfig)), end="")
    return 0
