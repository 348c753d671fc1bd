"""A run's results made durable, findable and judged, after ``evaluate`` (docs/results.md).

* :mod:`~dpo_lib.results.publish` (worker): MLflow synced, the stored copy (:mod:`~dpo_lib.results.upload`,
  ``upload.json`` last), the registered version (:mod:`~dpo_lib.results.registry`), the champion fetched.
* :mod:`~dpo_lib.results.compare` (runner, torch): the new model and the champion on the same held-out pairs,
  and ``samples.json`` (:mod:`~dpo_lib.results.samples`).
* :mod:`~dpo_lib.results.promote` (worker): the gate's decision (:mod:`~dpo_lib.results.gate`), the alias
  moved or kept, ``promotion.json``.

Importing this package imports neither torch nor mlflow.
"""
