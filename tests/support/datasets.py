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


def expected_cuts(folder: Path, rows: list[dict[str, str]], max_length: int, max_prompt_length: int) -> list[int]:
    """Tokens the trainer's rule drops from each row, worked out here from the tokenizer alone."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    cuts = []
    for row in rows:
        prompt, chosen, rejected = (
            len(tokenizer(row[k], add_special_tokens=False)["input_ids"]) for k in ("prompt", "chosen", "rejected")
        )
        prompt, chosen, rejected = prompt + 1, chosen + 1, rejected + 1  # BOS before the prompt, EOS after each reply
        if prompt + max(chosen, rejected) <= max_length:
            cuts.append(0)
            continue
        room = max_length - min(prompt, max_prompt_length)
        cuts.append(max(0, prompt - max_prompt_length) + max(0, chosen - room) + max(0, rejected - room))
    return cuts
