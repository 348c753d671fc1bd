"""dpo_lib: the one library behind the DPO pipeline.

Airflow tasks, the trainer container and the CLI all call into this package.
Importing it (and its light submodules: ``data``, ``storage``, ``config``,
``orchestration``) never imports torch, so DAG files stay fast to parse.
"""

__version__ = "0.1.0"
