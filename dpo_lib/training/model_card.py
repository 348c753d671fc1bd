"""The model card (``README.md``) of a run's final/: what was trained from what, how, and how it scored.

Hugging Face's layout: a small YAML header (``base_model``, ``library_name``, ``tags``) and Markdown
saying the base model, the datasets (URI, and sha256 when staging checked it), the loss and its
hyper-parameters, the adapter, the steps, the held-out metrics of the policy beside its
reference's, and how to load the folder. ``train`` writes it into final/ before final/ appears;
``evaluate`` writes it again with the metrics. It says only what it is given: a run from a DAG run
spec knows the dataset's original URI, a run folder alone its staged copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dpo_lib.io import atomic_write_text
from dpo_lib.spec import TrainConfig

CARD_FILE = "README.md"
METRICS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
           "logps/accuracies", "logps/chosen", "logps/rejected")  # fmt: skip


def render(
    config: TrainConfig,
    *,
    step: int | None,
    evaluation: Mapping[str, Any] | None = None,
    dataset_uris: Mapping[str, str] | None = None,
) -> str:
    """The card's text. ``step``: optimizer steps trained; ``evaluation``: the ``eval`` part of metrics.json
    as ``evaluate`` writes it; ``dataset_uris``: original URIs by dataset name, where the config names staged
    copies."""
    lora = config.adapter if config.adapter.name == "lora" else None
    adapter_folder = lora is not None and not lora.merge
    base = config.model.name_or_path
    tags = ["dpo_lib", config.loss.name, *(["lora"] if lora else [])]
    lines = [
        "---",
        f"base_model: {json.dumps(base)}",
        f"library_name: {'peft' if adapter_folder else 'transformers'}",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "---",
        "",
        f"# {config.exp_name}",
        "",
        f"{'LoRA adapters for' if adapter_folder else 'A fine-tune of'} `{base}`, trained with the "
        f"`{config.loss.name}` loss by dpo_lib.",
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}`{_model_source(config)} |",
    ]
    for name, dataset in config.datasets.items():
        uri = (dataset_uris or {}).get(name, dataset.uri)
        digest = f", sha256 `{dataset.sha256}`" if dataset.sha256 else ""
        lines.append(f"| dataset `{name}` | `{uri}`{digest}; {dataset.eval_fraction:.0%} held out |")
    lines += [
        f"| loss | `{config.loss.name}`{_values(config.loss.model_dump(exclude={'name'}))} |",
        f"| adapter | {_adapter(config)} |",
        f"| steps | {step if step is not None else 'unknown'} optimizer steps of "
        f"{config.batch_size * config.gradient_accumulation_steps} pairs, lr {config.lr:g}, "
        f"max_length {config.max_length} |",
        "",
        "## Held-out evaluation",
        "",
        *_evaluation(config, evaluation),
        "",
        "## Loading",
        "",
        "```python",
        *_loading(Path(config.run_dir) / "final", adapter_folder),
        "```",
        "",
    ]
    return "\n".join(lines)


def write(
    directory: str | Path,
    config: TrainConfig,
    *,
    step: int | None,
    evaluation: Mapping[str, Any] | None = None,
    dataset_uris: Mapping[str, str] | None = None,
) -> Path:
    """Write the card to ``directory/README.md`` atomically; returns its path."""
    path = Path(directory) / CARD_FILE
    atomic_write_text(path, render(config, step=step, evaluation=evaluation, dataset_uris=dataset_uris))
    return path


def _values(values: Mapping[str, Any]) -> str:
    return " (" + ", ".join(f"{key} {value:g}" for key, value in values.items()) + ")" if values else ""


def _model_source(config: TrainConfig) -> str:
    model = config.model
    if not model.source_uri:
        return ""
    digest = f", content hash `{model.content_hash}`" if model.content_hash else ""
    return f", staged from `{model.source_uri}`{digest}"


def _adapter(config: TrainConfig) -> str:
    adapter = config.adapter
    if adapter.name != "lora":
        return "none: every weight trained"
    targets = adapter.target_modules if isinstance(adapter.target_modules, str) else ", ".join(adapter.target_modules)
    folder = "merged into the weights here" if adapter.merge else "this folder holds the adapters alone"
    return f"LoRA r {adapter.r}, alpha {adapter.alpha}, dropout {adapter.dropout:g}, on {targets}; {folder}"


def _evaluation(config: TrainConfig, evaluation: Mapping[str, Any] | None) -> list[str]:
    if not evaluation:
        return [f"Not evaluated yet: `python -m dpo_lib evaluate --run-dir {config.run_dir}` adds the held-out "
                "metrics here."]  # fmt: skip
    reference = evaluation.get("reference", {})
    lines = [
        f"{evaluation.get('n_pairs', '?')} held-out pairs, after step {evaluation.get('step', '?')}; the "
        "reference is the base model (rewards are β·(policy − reference) log-probs).",
        "",
        "| metric | policy | reference |",
        "|---|---|---|",
    ]
    for name in METRICS:
        if name in evaluation:
            lines.append(f"| {name} | {_number(evaluation[name])} | {_number(reference.get(name))} |")
    return lines


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def _loading(final: Path, adapter_folder: bool) -> list[str]:
    if adapter_folder:
        return ["from peft import AutoPeftModelForCausalLM", "",
                f"model = AutoPeftModelForCausalLM.from_pretrained({json.dumps(str(final))})  # the base, adapters on"]  # fmt: skip
    return ["from transformers import AutoModelForCausalLM", "",
            f"model = AutoModelForCausalLM.from_pretrained({json.dumps(str(final))})"]  # fmt: skip
