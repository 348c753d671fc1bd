"""What the fine-tune tasks do, as plain functions: validate a request into a run spec, stage its
inputs, clean up. No Airflow and no torch imported here; :mod:`dpo_lib.dag` wires these into tasks.
"""
