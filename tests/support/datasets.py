"""Small builders for dataset files used across the data tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def record(prompt: Any = "Say hi.", chosen: Any = "Hi!", rejected: Any = "No.") -> dict[str, Any]:
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def jsonl(records: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def json_array(records: list[Any]) -> str:
    """One record per line, as pretty-printers write it, so lines and indices differ."""
    return "[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n"


def write(directory: Path, name: str, content: str | bytes) -> Path:
    path = directory / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def hh_dialogue(*turns: str) -> str:
    """Alternate Human/Assistant turns, HH style: ``"\\n\\nHuman: a\\n\\nAssistant: b"``."""
    speakers = ("Human", "Assistant")
    return "".join(f"\n\n{speakers[i % 2]}: {text}" for i, text in enumerate(turns))
