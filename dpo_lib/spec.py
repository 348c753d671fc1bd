"""The run contract: every field of a training config and of a fine-tune request, typed, bounded, with
its default and help text, in one place.

* :class:`TrainConfig`: what ``python -m dpo_lib train`` trains; ``configs/`` presets compose into it.
* :class:`FinetuneRequest`: what a caller sends (DAG Params, the webhook's body, ``dpo_lib trigger``).
* :class:`RunSpec`: one DAG run, resolved once by ``validate`` and written to ``run_spec.json``;
  every later task reads that file.

The JSON Schemas (``configs/schemas/``), the DAG's Params and the tables of docs/configuration.md
are generated from these models (``python -m dpo_lib schema``); tests check they agree. No torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
OVERRIDE_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"
MAX_URI_CHARS = 2048
MAX_OVERRIDES = 64
MAX_OVERRIDE_VALUE_CHARS = 1024
GROUPS = ("model", "loss", "trainer", "adapter", "datasets")  # config groups: folders of configs/


MAX_PROBLEMS, MAX_REASON = 50, 300  # what a refusal lists, and how long each reason may be


class SpecError(ValueError):
    """A request or config that must not reach training; ``problems`` lists ``(field, reason)`` pairs.

    They are sorted and kept small whatever the input: at most 50, each reason at most 300
    characters, unpaired surrogates (which no UTF-8 answer or log can carry) escaped.
    """

    def __init__(self, problems: list[tuple[str, str]], title: str = "invalid request") -> None:
        problems = sorted({(_printable(field)[:MAX_REASON], _clip(_printable(reason))) for field, reason in problems})
        if len(problems) > MAX_PROBLEMS:  # a hostile body can hold thousands
            problems = [
                *problems[:MAX_PROBLEMS],
                ("(request)", f"... and {len(problems) - MAX_PROBLEMS} more problems"),
            ]
        self.problems = problems
        lines = "\n".join(f"  {field}: {reason}" for field, reason in problems)
        super().__init__(f"{title}:\n{lines}")


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _clip(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


class Contract(BaseModel):
    """Frozen, strict, no unknown keys: a typo is an error naming the key, never a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=True, allow_inf_nan=False)


def _no_nul_or_surrogate(value: str) -> str:
    """Text that travels to files, logs and command lines: no NUL, no unpaired surrogate."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if re.search("[\ud800-\udfff]", value):
        raise ValueError("is not valid Unicode (it holds an unpaired surrogate)")
    return value


Text = Annotated[str, AfterValidator(_no_nul_or_surrogate)]
Name = Annotated[
    str,
    Field(pattern=NAME_PATTERN, description="letters, digits, '.', '_' and '-', starting with a letter or digit"),
]
Switch = Literal[True, False, "auto"]


# ---- the training config -------------------------------------------------------------------------


class ModelConfig(Contract):
    """The base model: a Hugging Face causal LM folder (config.json, weights, tokenizer), or a Hub name.

    ``source_uri`` and ``content_hash`` record where a staged model came from (lineage); they are
    left out of a dump while unset, so the config of a preset run reads as it always did (and a run
    folder made before they existed still resumes).
    """

    name: Name = Field(description="the preset's name (a configs/model/ option)")
    name_or_path: Text = Field(min_length=1, description="Hugging Face model folder, or a Hub name (org/model)")
    tokenizer_name_or_path: Text | None = Field(None, min_length=1, description="tokenizer folder; null: the model's")
    source_uri: Text | None = Field(
        None, max_length=MAX_URI_CHARS, description="where stage copied the model from (the request's model_uri)"
    )
    content_hash: str | None = Field(
        None, pattern=r"^[0-9a-f]{64}$", description="the staged folder's content hash (its key in the model cache)"
    )

    @model_serializer(mode="wrap")
    def _omit_unset_lineage(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for key in ("source_uri", "content_hash"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data


class DatasetConfig(Contract):
    """One preference dataset and its held-out share."""

    uri: Text = Field(min_length=1, max_length=MAX_URI_CHARS, description="local path, file:// or gs:// URI")
    format: Literal["json", "jsonl", "hh", "conversational"] | None = Field(
        None, description="null: detected from the data"
    )
    eval_fraction: float = Field(0.1, ge=0, lt=1, description="held-out share, chosen by a seeded shuffle")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{64}$",
        description="the file's sha256 when it was validated at staging: trusted then, checked, not re-validated",
    )


class _Beta(Contract):
    beta: float = Field(0.1, gt=0, le=100, description="β: how far the policy may move from the reference")


class _LabelSmoothing(Contract):
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="ε: assumed share of flipped preference labels (conservative DPO)"
    )


class DPOLossConfig(_LabelSmoothing, _Beta):
    """Sigmoid DPO (Rafailov et al., 2023); label_smoothing > 0 gives conservative DPO (cDPO)."""

    name: Literal["dpo"] = "dpo"


class IPOLossConfig(_Beta):
    """IPO (Azar et al., 2023): squared distance of the log-ratio margin from 1/(2β)."""

    name: Literal["ipo"] = "ipo"


class HingeLossConfig(_Beta):
    """Hinge loss on the scaled log-ratio margin (SLiC-style)."""

    name: Literal["hinge"] = "hinge"


class ReferenceFreeLossConfig(_LabelSmoothing, _Beta):
    """Sigmoid DPO against a uniform reference: no reference model is loaded or run."""

    name: Literal["reference_free"] = "reference_free"


class SFTLossConfig(Contract):
    """Supervised fine-tuning on the chosen completions; rejected ones are ignored."""

    name: Literal["sft"] = "sft"


LossConfig = Annotated[
    DPOLossConfig | IPOLossConfig | HingeLossConfig | ReferenceFreeLossConfig | SFTLossConfig,
    Field(discriminator="name"),
]
LOSS_CONFIGS: tuple[type[Contract], ...] = (
    DPOLossConfig,
    IPOLossConfig,
    HingeLossConfig,
    ReferenceFreeLossConfig,
    SFTLossConfig,
)


class _TrainerOptions(Contract):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when a GPU is visible, else cpu")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto: bf16 autocast over fp32 weights on cuda, fp32 on cpu"
    )
    attn_implementation: str = Field(
        "auto",
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="auto: varlen (FlashAttention on packed rows) on cuda with packing, else sdpa; "
        "or flex_attention, or any Hugging Face attention implementation",
    )
    packing: Switch = Field("auto", description="one row per micro-batch, no compute on padding (auto: on cuda)")
    logp_chunk_size: int | None = Field(
        1024, ge=1, le=1 << 20, description="output head in chunks of this many tokens, no full logits (null: off)"
    )
    precompute_ref_logps: bool = Field(
        False, description="reference log-probs computed once before training and cached: no reference forward a step"
    )
    compile: Switch = Field("auto", description="torch.compile each decoder layer (auto: on cuda)")
    compile_logp_head: Switch = Field(
        "auto", description="also fuse the chunked head's element-wise work (auto: when compile is on)"
    )
    activation_checkpointing: bool = Field(False, description="recompute activations in backward: less memory")


class BasicTrainerConfig(_TrainerOptions):
    """One process, one device."""

    name: Literal["basic"] = "basic"


class _MultiProcess(_TrainerOptions):
    nproc: int | None = Field(None, ge=1, le=1024, description="processes; null: every visible GPU (2 on a CPU)")


class FSDPTrainerConfig(_MultiProcess):
    """FSDP2 across every visible GPU, one process each (``train`` starts torchrun itself)."""

    name: Literal["fsdp"] = "fsdp"
    reshard_after_forward: bool = Field(
        True, description="free gathered layer weights after forward (ZeRO-3); false keeps them (ZeRO-2-like)"
    )


class TensorParallelTrainerConfig(_MultiProcess):
    """Tensor parallel across every visible GPU, one process each; nproc must divide the head counts."""

    name: Literal["tensor_parallel"] = "tensor_parallel"


TrainerConfig = Annotated[
    BasicTrainerConfig | FSDPTrainerConfig | TensorParallelTrainerConfig, Field(discriminator="name")
]
TRAINER_CONFIGS: tuple[type[Contract], ...] = (BasicTrainerConfig, FSDPTrainerConfig, TensorParallelTrainerConfig)
MULTI_PROCESS_TRAINERS = ("fsdp", "tensor_parallel")


class NoAdapterConfig(Contract):
    """Full fine-tuning: every weight of the policy trains."""

    name: Literal["none"] = "none"


class LoRAConfig(Contract):
    """LoRA (Hu et al., 2021) through peft: low-rank adapters on the target layers train, the base stays frozen.

    The base weights are held once: the reference is the policy with its adapters switched off.
    """

    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, le=4096, description="rank of each adapter")
    alpha: int = Field(32, ge=1, le=1_000_000, description="scale: an adapter's output is multiplied by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on each adapter's input")
    target_modules: (
        Literal["all-linear"]
        | Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.]{1,128}$")]], Field(min_length=1, max_length=64)]
    ) = Field(
        "all-linear",
        description="the linear layers that get adapters: all-linear (every linear layer of the decoder, not "
        "the output head) or module names, e.g. [q_proj, v_proj]",
    )
    merge: bool = Field(
        False, description="final/ holds the base with the adapters merged in (a full model), not the adapter folder"
    )


AdapterConfig = Annotated[NoAdapterConfig | LoRAConfig, Field(discriminator="name")]
ADAPTER_CONFIGS: tuple[type[Contract], ...] = (NoAdapterConfig, LoRAConfig)


class TrainConfig(Contract):
    """A training run: model, loss, trainer, data, and the optimisation and bookkeeping knobs."""

    exp_name: Name = Field(description="names the run's folder")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seeds the split, the shuffles and any random init")
    run_dir: Text = Field(
        "", description="checkpoints, metrics.json and final/ go here; running again resumes (default: "
        "artifacts/runs/<exp_name>)"
    )  # fmt: skip
    model: ModelConfig
    loss: LossConfig = Field(default_factory=DPOLossConfig)
    trainer: TrainerConfig = Field(default_factory=BasicTrainerConfig)
    adapter: AdapterConfig = Field(default_factory=NoAdapterConfig)
    datasets: dict[Name, DatasetConfig] = Field(min_length=1, max_length=64)

    batch_size: int = Field(8, ge=1, le=4096, description="preference pairs per forward pass")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="micro-batches per optimizer step (a step sees batch_size × this many pairs)"
    )
    lr: float = Field(5.0e-4, gt=0, le=1.0, description="AdamW learning rate after warmup")
    weight_decay: float = Field(0.0, ge=0, le=10.0, description="AdamW weight decay")
    warmup_steps: int = Field(10, ge=0, le=1_000_000, description="linear warmup, in optimizer steps")
    max_steps: int = Field(120, ge=1, le=1_000_000, description="optimizer steps to train")
    max_grad_norm: float | None = Field(1.0, gt=0, le=1e6, description="gradient clipping (null: off)")

    max_length: int = Field(128, ge=2, le=131_072, description="prompt + completion is cut to this many tokens")
    max_prompt_length: int = Field(64, ge=1, le=131_072, description="the prompt alone is cut to this first")
    truncation_mode: Literal["keep_end", "keep_start"] = Field(
        "keep_end", description="which end of a long prompt is kept"
    )

    log_every: int = Field(10, ge=1, le=1_000_000, description="optimizer steps between log lines")
    eval_every: int = Field(40, ge=0, le=1_000_000, description="steps between held-out evaluations (0: off)")
    checkpoint_every: int = Field(40, ge=0, le=1_000_000, description="steps between checkpoints (0: off)")
    keep_checkpoints: int = Field(2, ge=1, le=100, description="newest checkpoints kept")
    eval_batch_size: int = Field(32, ge=1, le=4096, description="pairs per evaluation forward pass")
    n_eval_examples: int | None = Field(
        None, ge=1, le=10_000_000, description="held-out pairs evaluated (null: the whole held-out split)"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_run_dir(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("run_dir") and isinstance(data.get("exp_name"), str):
            data = {**data, "run_dir": f"artifacts/runs/{data['exp_name']}"}
        return data

    @field_validator("max_prompt_length")
    @classmethod
    def _prompt_leaves_room(cls, value: int, info: ValidationInfo) -> int:
        max_length = info.data.get("max_length")
        if max_length is not None and value >= max_length:
            raise ValueError(f"{value} must be smaller than max_length ({max_length}) to leave room for the completion")
        return value

    @field_validator("adapter")
    @classmethod
    def _adapter_fits_the_trainer(cls, value: NoAdapterConfig | LoRAConfig, info: ValidationInfo):
        trainer = info.data.get("trainer")
        if value.name != "none" and trainer is not None and trainer.name == "tensor_parallel":
            raise ValueError(f"adapter={value.name} does not work with trainer=tensor_parallel; "
                             "use trainer=fsdp or trainer=basic, or adapter=none")  # fmt: skip
        return value

    @property
    def needs_torchrun(self) -> bool:
        return self.trainer.name in MULTI_PROCESS_TRAINERS


# ---- the request ---------------------------------------------------------------------------------


def _group_option(group: str):
    def check(value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("resolved"):
            return value  # read back from a run spec: checked when the spec was made
        options = config_options(group, (info.context or {}).get("config_dir"))
        if value not in options:
            raise ValueError(f"{value!r} is not a configs/{group}/ option; choose one of {', '.join(options)}")
        return value

    return AfterValidator(check)


def _dataset_uri(value: str, info: ValidationInfo) -> str:
    from dpo_lib.storage.uri import uri_problem

    if (info.context or {}).get("resolved"):
        return value
    if problem := uri_problem(value, (info.context or {}).get("local_root")):
        raise ValueError(problem)
    return value


def _model_uri(value: str | None, info: ValidationInfo) -> str | None:
    from dpo_lib.storage.uri import uri_problem

    if value is None or (info.context or {}).get("resolved"):
        return value
    if problem := uri_problem(value, (info.context or {}).get("local_root")):
        raise ValueError(problem)
    return value


DEFAULT_MODEL = "tiny"


def _output_uri(value: str | None, info: ValidationInfo) -> str | None:
    from dpo_lib.storage.uri import uri_problem

    if value is not None and not (info.context or {}).get("resolved"):
        if problem := uri_problem(value, (info.context or {}).get("local_root")):
            raise ValueError(problem)
    return value


class PromotionConfig(Contract):
    """The champion gate: this run's model takes the registered model's ``champion`` alias only when it beats
    the champion on ``metric``, both evaluated on this run's held-out pairs, by at least ``min_delta``."""

    metric: Literal["rewards/accuracies", "loss"] = Field(
        "rewards/accuracies", description="rewards/accuracies (higher is better) or loss (lower is better)"
    )
    min_delta: float = Field(0.0, ge=0, le=1e6, description="the least improvement that promotes (0: any gain)")


def _override_value(value: Any) -> Any:
    """An override's value: a string, number, boolean or null, as JSON has them."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_OVERRIDE_VALUE_CHARS:
            raise ValueError(f"a string of {len(value)} characters; at most {MAX_OVERRIDE_VALUE_CHARS}")
        return _no_nul_or_surrogate(value)
    raise ValueError(f"must be a string, number, boolean or null, not {type(value).__name__}")


class FinetuneRequest(Contract):
    """A fine-tune request: the conf of a ``dpo_finetune`` run and the body of ``POST /dpo/trigger-finetune``."""

    dataset_uri: Annotated[Text, AfterValidator(_dataset_uri)] = Field(
        "data/dataset.json",
        title="Dataset URI",
        min_length=1,
        max_length=MAX_URI_CHARS,
        description="your preference data, records of a prompt, a chosen and a rejected answer: a path under "
        "the local storage root, file:///..., or gs://bucket/path",
    )
    model: Annotated[str, _group_option("model")] = Field(
        DEFAULT_MODEL,
        description="the base model: a configs/model/ preset; leave it at its default with model_uri",
    )
    model_uri: Annotated[
        Annotated[str, Field(min_length=1, max_length=MAX_URI_CHARS), AfterValidator(_no_nul_or_surrogate)] | None,
        AfterValidator(_model_uri),
        WithJsonSchema({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_URI_CHARS}),
    ] = Field(
        None,
        title="Model URI",
        description="a Hugging Face model folder instead of a preset: a path under the local storage root, "
        "file:///... or gs://bucket/prefix/ (staged once per content)",
    )
    loss: Annotated[str, _group_option("loss")] = Field(
        "dpo",
        description="dpo: standard DPO, a sigmoid loss on how much more than the reference the model prefers "
        "the chosen answer; ipo: IPO, a squared loss that is harder to overfit; hinge: SLiC's hinge loss on that "
        "margin; reference_free: DPO without a reference model (less memory); sft: plain supervised "
        "fine-tuning on the chosen answers",
    )
    trainer: Annotated[str, _group_option("trainer")] = Field(
        "basic",
        description="basic: one process on one device (the CPU or one GPU); fsdp: FSDP2, the weights sharded "
        "over every visible GPU, for models too big for one; tensor_parallel: each layer split across every "
        "visible GPU",
    )
    adapter: Annotated[str, _group_option("adapter")] = Field(
        "none",
        description="none: every weight of the model trains; lora: LoRA adapters train on the frozen base, "
        "held once (the reference is the base: the adapters switched off); final/ holds the adapter folder, "
        "or with adapter.merge the merged model",
    )
    exp_name: Name = Field(
        "dpo", title="Experiment name", description="names the run's artifact folder: letters, digits, '.', '_' and '-'"
    )
    overrides: Annotated[
        dict[
            Annotated[str, Field(pattern=OVERRIDE_KEY_PATTERN, max_length=128)],
            Annotated[Any, AfterValidator(_override_value)],
        ],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": MAX_OVERRIDES,
                "propertyNames": {"pattern": OVERRIDE_KEY_PATTERN, "maxLength": 128},
                "additionalProperties": {
                    "type": ["string", "number", "boolean", "null"],
                    "maxLength": MAX_OVERRIDE_VALUE_CHARS,
                },
            }
        ),
    ] = Field(
        default_factory=dict,
        max_length=MAX_OVERRIDES,
        title="Overrides",
        description='training config values, e.g. {"lr": 0.0001, "max_steps": 200, "loss.beta": 0.2}: '
        "any key of the training config except the groups the request chooses and the run's folders",
    )
    output_uri: Annotated[
        Annotated[str, Field(min_length=1, max_length=MAX_URI_CHARS), AfterValidator(_no_nul_or_surrogate)] | None,
        AfterValidator(_output_uri),
        WithJsonSchema({"type": ["string", "null"], "minLength": 1, "maxLength": MAX_URI_CHARS}),
    ] = Field(
        None,
        title="Output URI",
        description="where publish stores the model and results (null: runs/<exp_name>/<run_id>/ beside the dataset)",
    )
    registered_model_name: Annotated[
        Name | None, WithJsonSchema({"type": ["string", "null"], "pattern": NAME_PATTERN, "maxLength": 128})
    ] = Field(None, description="the MLflow registered model the run's model is a version of (null: exp_name)")
    promotion: Annotated[
        PromotionConfig | None,
        WithJsonSchema(
            {
                "type": ["object", "null"],
                "properties": {
                    "metric": {"enum": ["rewards/accuracies", "loss"]},
                    "min_delta": {"type": "number", "minimum": 0, "maximum": 1e6},
                },
            }
        ),
    ] = Field(
        None,
        description='the champion gate: {"metric": "rewards/accuracies" or "loss", "min_delta": 0} (null: these)',
    )

    @field_validator("model_uri")
    @classmethod
    def _not_with_a_preset(cls, value: str | None, info: ValidationInfo) -> str | None:
        model = info.data.get("model")
        if value is not None and model is not None and model != DEFAULT_MODEL:
            raise ValueError(f"give model or model_uri, not both (model is {model!r}; leave it at its default, "
                             f"{DEFAULT_MODEL}, with model_uri)")  # fmt: skip
        return value

    @classmethod
    def parse(cls, conf: Any, *, local_root: Path | None = None, config_dir: Path | None = None) -> FinetuneRequest:
        """``conf`` checked, defaults filled in; :class:`SpecError` naming every bad field otherwise."""
        if not isinstance(conf, Mapping):
            raise SpecError([("(request)", f"the request must be a JSON object, not {type(conf).__name__}")])
        fields = list(cls.model_fields)
        # A key that is not valid Unicode (a lone surrogate, as JSON's "\\udfff" gives) fails pydantic's whole
        # validation with one error naming nothing: refuse it as the unknown field it is, and check the rest.
        unreadable = [key for key in conf if not isinstance(key, str) or re.search("[\ud800-\udfff]", key)]
        found = [(str(key), f"unknown field; expected one of {', '.join(fields)}") for key in unreadable]
        readable = {key: value for key, value in conf.items() if key not in unreadable}
        try:
            request = cls.model_validate(readable, context={"local_root": local_root, "config_dir": config_dir})
        except ValidationError as exc:
            raise SpecError([*found, *problems(exc, fields=fields)]) from None
        if found:
            raise SpecError(found)
        return request


# ---- one run of the DAG --------------------------------------------------------------------------

SPEC_FILE = "run_spec.json"
MANIFEST_FILE = "manifest.json"
STAGED_DATASET = "from_uri"  # the name of the request's dataset in the training config (configs/datasets/)


class RunSpec(Contract):
    """One run of the fine-tune DAG, resolved by ``validate``: what every later task reads."""

    dag_id: str
    run_id: str
    request: FinetuneRequest
    staging_dir: Text = Field(description="this run's staged inputs and this file; removed by cleanup")
    dataset_path: Text = Field(description="where stage puts the dataset (datasets.from_uri.uri)")
    train: TrainConfig

    @property
    def run_dir(self) -> Path:
        return Path(self.train.run_dir)

    @property
    def path(self) -> Path:
        return Path(self.staging_dir) / SPEC_FILE

    @property
    def manifest_path(self) -> Path:
        return Path(self.staging_dir) / MANIFEST_FILE

    def write(self) -> Path:
        from dpo_lib.io import atomic_write_json

        atomic_write_json(self.path, self.model_dump(mode="json"))
        return self.path

    @classmethod
    def read(cls, path: str | Path) -> RunSpec:
        return cls.model_validate_json(Path(path).read_bytes(), context={"resolved": True})

    def staged_train_config(self) -> TrainConfig:
        """The training config with the staged dataset's digest and format, from ``stage``'s manifest:
        the trainer checks the file against the digest instead of validating it again."""
        manifest = Manifest.read(self.manifest_path)
        dataset = self.train.datasets[STAGED_DATASET].model_copy(
            update={"sha256": manifest.sha256, "format": manifest.format}
        )
        update: dict[str, Any] = {"datasets": {**self.train.datasets, STAGED_DATASET: dataset}}
        if manifest.model is not None:  # the model's folder in the cache: it outlives this run's staging folder
            update["model"] = self.train.model.model_copy(
                update={"name_or_path": manifest.model.path, "content_hash": manifest.model.content_hash}
            )
        return self.train.model_copy(update=update)


class StagedModel(Contract):
    """The base model ``stage`` staged from ``model_uri``: its folder in the model cache and its content hash."""

    uri: str
    path: str = Field(description="the model's folder in the model cache (read-only, shared by runs)")
    content_hash: str = Field(description="sha256 over the folder's file names, sizes and md5/crc32c digests")
    size: int
    files: int
    from_cache: bool = Field(description="true: an earlier run had staged the same content; nothing was downloaded")


class TokenLengths(Contract):
    """Percentiles (linear interpolation between ranks) and maximum of a length in tokens."""

    p50: float
    p90: float
    p99: float
    max: int


class Truncation(Contract):
    """What the trainer's truncation rule (dpo_lib/data/tokenize.py) does to a dataset's valid pairs
    with a tokenizer and lengths; ``lengths`` are before truncation (prompt, chosen, rejected, and
    sequence: the prompt with the longer completion)."""

    tokenizer: str = Field(description="the tokenizer's folder or Hub name")
    max_length: int
    max_prompt_length: int
    truncation_mode: Literal["keep_end", "keep_start"]
    pair_count: int
    truncated_pairs: int = Field(description="pairs that lose at least one token")
    prompt_truncated_pairs: int = Field(description="pairs whose prompt is cut to max_prompt_length")
    response_truncated_pairs: int = Field(description="pairs whose chosen or rejected completion is cut")
    tokens_dropped: int = Field(description="tokens cut off in all (prompt and both completions of each pair)")
    max_tokens_dropped: int = Field(description="the most tokens cut off one pair")
    lengths: dict[str, TokenLengths] = Field(default_factory=dict)

    def summary(self) -> str:
        """One line: how many pairs lose tokens at ``max_length``, and how many they lose."""
        head = f"truncation at max_length {self.max_length} (max_prompt_length {self.max_prompt_length})"
        if not self.truncated_pairs:
            return f"{head}: none of {self.pair_count:,} pairs loses a token"
        share = 100 * self.truncated_pairs / self.pair_count
        return (
            f"{head}: {self.truncated_pairs:,} of {self.pair_count:,} pairs ({share:.2f}%) lose tokens "
            f"({self.prompt_truncated_pairs:,} in the prompt, {self.response_truncated_pairs:,} in a completion); "
            f"{self.tokens_dropped:,} tokens dropped, {self.tokens_dropped / self.truncated_pairs:,.1f} a truncated "
            f"pair on average, at most {self.max_tokens_dropped:,}"
        )

    def format_text(self) -> str:
        """The summary line, then one line of token-length percentiles per length (before truncation)."""
        lines = [self.summary(), f"lengths in tokens of {self.tokenizer} (p50 / p90 / p99 / max):"]
        for name, stats in self.lengths.items():
            values = " / ".join(f"{value:g}" for value in (stats.p50, stats.p90, stats.p99, stats.max))
            lines.append(f"  {name:<9} {values}")
        return "\n".join(lines)


class Manifest(Contract):
    """What ``stage`` wrote: the staged dataset, as validated (``manifest.json`` beside the run spec)."""

    run_id: str
    dataset_uri: str
    staged_path: str
    size: int
    sha256: str
    format: Literal["json", "jsonl", "hh", "conversational"]
    record_count: int
    warning_count: int
    staged_at: str
    model: StagedModel | None = None  # set when the request names model_uri
    truncation: Truncation | None = None  # set when the staged model's tokenizer could be loaded

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        return cls.model_validate_json(Path(path).read_bytes())


# ---- helpers -------------------------------------------------------------------------------------


def config_options(group: str, config_dir: Path | None = None) -> list[str]:
    """The presets of a config group: the ``configs/<group>/*.yaml`` file names."""
    from dpo_lib.settings import config_dir as default_config_dir

    return sorted(p.stem for p in (Path(config_dir or default_config_dir()) / group).glob("*.yaml"))


_UNION_FIELDS = {"loss", "trainer", "adapter"}  # pydantic puts the chosen variant's tag in error locations


def problems(exc: ValidationError, prefix: str = "", fields: list[str] | None = None) -> list[tuple[str, str]]:
    """pydantic's errors as sorted ``(dotted.field, reason)`` pairs a user can act on.

    ``fields``: the model's own fields, named when an unknown top-level key is refused.
    """
    found = set()
    for error in exc.errors(include_url=False):
        loc, variant = [str(part) for part in error["loc"] if part != "[key]"], None
        if fields and error["type"] == "extra_forbidden" and len(loc) == 1:
            found.add((loc[0], f"unknown field; expected one of {', '.join(fields)}"))
            continue
        if len(loc) >= 2 and loc[0] in _UNION_FIELDS and error["type"] != "union_tag_invalid":
            variant = f"the {loc[1]} {loc[0]}"
            loc = [loc[0], *loc[2:]]  # ("loss", "dpo", "beta") -> loss.beta
        field = ".".join(filter(None, [prefix, *loc])) or "(request)"
        found.add((field, _reason(error, variant)))
    return sorted(found)


def _reason(error: Mapping[str, Any], variant: str | None = None) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        where = f"a field of {variant}" if variant else "a field here"
        return f"not {where} (check the spelling; docs/configuration.md lists the fields)"
    if kind == "missing":
        return "a value is required"
    if kind == "union_tag_invalid":
        return message.replace("Input tag", "name")
    return message.removeprefix("Value error, ")


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON Schema (draft 2020-12) as the files in configs/schemas/ hold it."""
    schema = model.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_FILES[model], **schema}


def request_schema(config_dir: Path | None = None) -> dict[str, Any]:
    """The request's JSON Schema with the presets of ``configs/`` as the choices of model, loss, trainer and adapter."""
    schema = json_schema(FinetuneRequest)
    for group in ("model", "loss", "trainer", "adapter"):
        schema["properties"][group]["enum"] = config_options(group, config_dir)
    return schema


SCHEMA_FILES: dict[type[BaseModel], str] = {
    FinetuneRequest: "request.schema.json",
    TrainConfig: "config.schema.json",
}
