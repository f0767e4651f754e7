"""Airflow wiring for recflow: the stage registry, the task factory and its backends.

The stages themselves live in ``pipelines/`` and never import Airflow; the tasks built here
run their command lines, the same ones ``dvc.yaml`` declares.
"""
