"""Where a DAG run's results go and under which names, from its spec: the request's fields or their defaults.

* ``output_uri``: the request's, else ``runs/<exp_name>/<run_id>/`` in the dataset's storage: under the
  local storage root for a local dataset, in the same bucket for a ``gs://`` one.
* ``registered_model_name``: the request's, else its ``exp_name``.
* ``promotion``: the request's, else :class:`~dpo_lib.spec.PromotionConfig`'s defaults.
"""

from __future__ import annotations

from pathlib import Path

from dpo_lib.results.upload import prefix_of
from dpo_lib.settings import path_safe
from dpo_lib.spec import FinetuneRequest, PromotionConfig, RunSpec
from dpo_lib.storage.uri import parse_uri

CHAMPION_ALIAS = "champion"


def output_uri(spec: RunSpec, local_root: str | Path) -> str:
    """The run's output prefix (with a trailing ``/``); a local one as an absolute path."""
    request = spec.request
    if request.output_uri:
        parsed = parse_uri(request.output_uri)
        if parsed.is_local and not Path(parsed.path).is_absolute():
            return prefix_of(str(Path(local_root).resolve() / parsed.path))
        return prefix_of(request.output_uri)
    relative = f"runs/{request.exp_name}/{path_safe(spec.run_id)}"
    dataset = parse_uri(request.dataset_uri)
    if dataset.scheme == "gs":
        return prefix_of(f"gs://{dataset.bucket}/{relative}")
    return prefix_of(str(Path(local_root).resolve() / relative))


def registered_model_name(request: FinetuneRequest) -> str:
    return request.registered_model_name or request.exp_name


def promotion_config(request: FinetuneRequest) -> PromotionConfig:
    return request.promotion or PromotionConfig()
