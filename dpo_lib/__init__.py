"""dpo_lib: the one library behind the DPO pipeline.

Airflow tasks, the trainer container and the CLI all call into this package. A run is described
once, by the typed contract in :mod:`dpo_lib.spec`. Importing the package (and its light
submodules: ``spec``, ``settings``, ``config``, ``data``, ``storage``, ``orchestration``, ``dag``,
``api``) never imports torch, so DAG files stay fast to parse; ``training`` does.
"""

__version__ = "0.1.0"
