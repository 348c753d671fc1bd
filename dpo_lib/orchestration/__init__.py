"""What the Airflow tasks do, as plain functions: no Airflow and no torch imported here.

DAG files wire these together; the functions validate a request, stage its
dataset into a per-run folder, build the trainer's command line, and clean up.
"""
