"""Which objects of a storage folder make up a Hugging Face model, and whether they make one at all.

Only the folder's own files are the model: a Hub snapshot's subfolders (``original/`` holds the
weights again in Meta's format) and hidden files are left out, and so are weights in formats the
trainer does not load (it loads ``*.safetensors``), so nothing is copied twice over.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dpo_lib.storage.uri import parse_uri

CONFIG_FILE = "config.json"
WEIGHTS_SUFFIX = ".safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
OTHER_WEIGHT_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf")


@dataclass(frozen=True)
class FolderFile:
    """One object of the model folder: its name inside the folder and its URI."""

    name: str
    uri: str


def file_uri(folder_uri: str, name: str) -> str:
    """The URI of ``name`` inside the folder ``folder_uri``."""
    return f"{folder_uri.rstrip('/')}/{name}"


def listing_prefix(folder_uri: str, local_root: str | Path) -> str:
    """What every URI that ``StorageInterface.list(folder_uri)`` returns starts with.

    Local storage lists resolved paths (plain ones for a plain path, ``file://`` URIs for a file
    URI); Firebase lists ``gs://bucket/name``.
    """
    parsed = parse_uri(folder_uri)
    if parsed.scheme == "gs":
        return f"gs://{parsed.bucket}/" + (parsed.path.rstrip("/") + "/" if parsed.path.strip("/") else "")
    path = Path(parsed.path)
    resolved = (path if path.is_absolute() else Path(local_root) / path).resolve()
    return (resolved.as_uri() if parsed.scheme == "file" else str(resolved)).rstrip("/") + "/"


def model_files(listed: list[str], prefix: str) -> list[FolderFile]:
    """The model's files among ``listed`` (the folder's objects, all below ``prefix``), sorted by name."""
    files = []
    for uri in listed:
        if not uri.startswith(prefix):
            continue
        name = uri[len(prefix) :]
        if "/" in name or name.startswith(".") or PurePosixPath(name).suffix in OTHER_WEIGHT_SUFFIXES:
            continue
        files.append(FolderFile(name, uri))
    return sorted(files, key=lambda f: f.name)


def folder_problem(names: list[str], all_names: list[str] | None = None) -> str | None:
    """Why files ``names`` are not a model the trainer can load, or None.

    ``all_names``: every name listed, to say what was found instead (pytorch_model.bin, say).
    """
    missing = []
    if CONFIG_FILE not in names:
        missing.append("config.json")
    if not any(name.endswith(WEIGHTS_SUFFIX) for name in names):
        missing.append("*.safetensors weights")
    if not any(name in TOKENIZER_FILES for name in names):
        missing.append(f"tokenizer files ({' or '.join(TOKENIZER_FILES)})")
    if not missing:
        return None
    found = all_names if all_names is not None else names
    shown = ", ".join(sorted(found)[:8]) + (", ..." if len(found) > 8 else "") if found else "no files at all"
    return f"is not a Hugging Face model folder: it has no {' and no '.join(missing)} (found: {shown})"
