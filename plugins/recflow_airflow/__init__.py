"""Airflow wiring for recflow: the task factory (``execution``), the script around each stage
command (``scripts``), the Kubernetes pods (``kubernetes``, ``pods``, ``training_job``) and the
checks against ``dvc.yaml`` (``parity``).

The stages and their table (``pipelines/stages/table.py``) live in ``pipelines/`` and never
import Airflow; the tasks built here run the table's command lines, the same ones ``dvc.yaml``
declares.
"""
